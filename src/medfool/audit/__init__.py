"""The audit: one command runs the threat catalogue on a model and writes a report."""

from medfool.audit.config import AuditConfig, load_config
from medfool.audit.runner import run_audit

__all__ = ["AuditConfig", "load_config", "run_audit"]
