"""``medfool range report``: what the defender saw of each attack run, beside what it cost the
attacker and what it achieved.

From the query log alone, per run (the ``X-Run-Id`` a client sent; runs without one are grouped
under their key): the queries it made, whether the detector noticed it and after how many of
its queries, how many were refused, and which keys were burnt (flagged at least once, so known
to the defender). Given the attack runs' folders (``medfool attack --out``), each run's success
and the queries the attack itself counted are set beside the log's, so that the two accounts can
be compared.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medfool.errors import ConfigError
from medfool.serve.querylog import QueryLog, Row

__all__ = ["RunReport", "as_json", "format_report", "range_report"]


@dataclass
class RunReport:
    run: str
    keys: list[str]
    queries: int
    noticed_after: int | None  # 1-based: the run's query the detector first flagged (None: never)
    flagged: int
    refused: int
    keys_burnt: list[str]
    first_time: float
    last_time: float
    attack: dict[str, Any] = field(default_factory=dict)  # from the run's results.json, when given


def _reports(rows: list[Row]) -> dict[str, RunReport]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.run or f"(no run id; key {r.key})", []).append(r)
    out = {}
    for run, rs in groups.items():
        flagged = [i for i, r in enumerate(rs) if r.verdict in ("flag", "reject")]
        keys = sorted({r.key for r in rs})
        burnt = sorted({r.key for r in rs if r.verdict in ("flag", "reject")})
        out[run] = RunReport(run, keys, len(rs), flagged[0] + 1 if flagged else None, len(flagged),
                             sum(r.verdict == "reject" for r in rs), burnt, rs[0].time, rs[-1].time)
    return out


def _attack_record(folder: Path) -> tuple[str, dict[str, Any]]:
    path = folder / "results.json"
    try:
        res = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (give folders 'medfool attack --out' wrote)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    served = res.get("range")
    if not isinstance(served, dict) or "run" not in served:
        raise ConfigError(f"{path}: not an attack run against a served model (no 'range' record)")
    summaries = res.get("summaries") or [{}]
    images = res.get("images") or []
    return str(served["run"]), {
        "folder": str(folder), "attack": res.get("attack"), "success_rate": summaries[-1].get("success_rate"),
        "robust_accuracy": summaries[-1].get("robust_accuracy"),
        "queries_counted_by_attack": sum(int(i.get("queries", 0)) for i in images),
        "client": served}


def range_report(log_path: Path, runs: list[Path] | None = None) -> list[RunReport]:
    """One report per run in the log; attack folders are matched to runs by their run id."""
    path = log_path / "queries.sqlite" if log_path.is_dir() else log_path
    if not path.is_file():
        raise ConfigError(f"{path}: no query log here ('medfool range serve --out' writes queries.sqlite)")
    try:
        reports = _reports(QueryLog.read(path))
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: not a query log ({exc})") from None
    for folder in runs or []:
        run, record = _attack_record(folder)
        if run not in reports:
            raise ConfigError(f"{folder}: its run {run!r} made no query in {path}")
        reports[run].attack = record
    return list(reports.values())


def format_report(reports: list[RunReport]) -> str:
    head = "run | keys | queries | noticed after | refused | keys burnt | success | attack counted"
    lines = [head, "-" * len(head)]
    for r in reports:
        a = r.attack
        success = f"{a['success_rate']:.1%}" if a.get("success_rate") is not None else "-"
        counted = str(a.get("queries_counted_by_attack", "-"))
        lines.append(f"{r.run} | {len(r.keys)} | {r.queries:,} | "
                     f"{'never' if r.noticed_after is None else f'{r.noticed_after:,} queries'} | {r.refused:,} | "
                     f"{len(r.keys_burnt)} of {len(r.keys)} | {success} | {counted}")
    return "\n".join(lines)


def as_json(reports: list[RunReport]) -> list[dict[str, Any]]:
    return [asdict(r) for r in reports]
