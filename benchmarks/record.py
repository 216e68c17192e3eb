"""Results files for the benchmarks (shared by the benchmark scripts).

Every figure in benchmarks/README.md must come from a file a script wrote, not from a terminal
scroll-back: each measuring script collects what it prints into a dict and hands it to
:func:`write_results`, which stores it with the command line, the environment and the time under
``benchmarks/results/<default_name>.json`` (beside this file, whatever the current directory),
or at ``--json PATH`` where one is given (the tests give one under their temporary folder, so
that they never write into the repository).
"""

from __future__ import annotations

import json
import math
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from medfool.utils.repro import environment

RESULTS = Path(__file__).resolve().parent / "results"
RESERVED = ("command", "environment", "written")


def slug(text: str) -> str:
    """``text`` as a piece of a file name: lower case, runs of other characters as one ``-``."""
    return re.sub(r"[^a-z0-9_.]+", "-", text.lower()).strip("-.") or "x"


def default_path(default_name: str) -> Path:
    """Where a run writes its figures when no ``--json`` is given."""
    return RESULTS / f"{default_name}.json"


def plain(value: object) -> object:
    """``value`` as JSON can hold it: tensors and arrays as (nested) lists, their scalars as
    numbers, paths as strings, tuples as lists, and non-finite floats (no fooled image, a bar
    never reached) as null."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy and torch, arrays and scalars alike
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(default_name: str, data: dict[str, object], path: str | Path | None = None) -> Path:
    """Write ``data`` with the command line, the environment and the UTC time as indented JSON
    to ``path``, or to ``benchmarks/results/<default_name>.json`` when ``path`` is None; print
    ``wrote PATH`` and return the path."""
    clash = [k for k in RESERVED if k in data]
    if clash:
        raise ValueError(f"{', '.join(clash)}: written by write_results itself, not a figure")
    out = Path(path) if path else default_path(default_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": {"script": Path(sys.argv[0]).name, "argv": list(sys.argv)},
              "environment": environment(),
              "written": datetime.now(UTC).isoformat(timespec="seconds"),
              **data}
    out.write_text(json.dumps(plain(record), indent=2) + "\n")
    print(f"wrote {out}")
    return out
