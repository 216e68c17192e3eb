"""Where medfool looks for data: --data-dir, then $MEDFOOL_DATA_DIR, then the user cache."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "cache_dir", "data_dirs", "find_file", "find_sidecars"]

ENV_VAR = "MEDFOOL_DATA_DIR"


def cache_dir() -> Path:
    """The per-user download cache (``$XDG_CACHE_HOME/medfool`` or ``~/.cache/medfool``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medfool"


def data_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Search order; $MEDFOOL_DATA_DIR may hold several folders separated by os.pathsep."""
    dirs: list[Path] = []
    if data_dir:
        dirs.append(Path(data_dir))
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()))
    dirs.append(cache_dir())
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        key = d.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            unique.append(key)
    return unique


def find_file(filename: str, dirs: list[Path]) -> Path | None:
    """The first ``dir/filename`` or ``dir/<sub>/filename`` in search order."""
    for d in dirs:
        if not d.is_dir():
            continue
        direct = d / filename
        if direct.is_file():
            return direct
        for sub in sorted(p for p in d.iterdir() if p.is_dir()):
            candidate = sub / filename
            if candidate.is_file():
                return candidate
    return None


def find_sidecars(dirs: list[Path]) -> list[Path]:
    """JSON sidecars (``*.json`` describing an .npz) in the data folders and one level down."""
    found: list[Path] = []
    for d in dirs:
        if not d.is_dir():
            continue
        for pattern in ("*.json", "*/*.json"):
            found.extend(sorted(d.glob(pattern)))
    return found
