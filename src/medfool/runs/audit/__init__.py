"""The audit: one command runs the threat catalogue on a model and writes a report."""

from medfool.runs.audit.config import AuditConfig, load_config
from medfool.runs.audit.runner import run_audit

__all__ = ["AuditConfig", "load_config", "run_audit"]
