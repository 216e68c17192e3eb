"""Atomic file writes: a reader never sees a half-written file, an interrupted run leaves none."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_json", "json_safe", "read_json_object",
           "remove_stray_parts"]


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a result file should get the usual mode
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json_object(path: Path, error: type[Exception], what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (a sidecar, a config), or ``error`` with one line naming the
    file: unreadable, not JSON, or JSON that is not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not a readable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} must be a JSON object, got {type(data).__name__}")
    return data


def remove_stray_parts(folder: Path) -> int:
    """Delete the temporary ``.NAME.*.part`` files an interrupted atomic write left in
    ``folder`` (call it only while no other process writes there); returns how many."""
    stray = list(folder.glob(".*.part"))
    for p in stray:
        p.unlink(missing_ok=True)
    return len(stray)


def json_safe(obj: Any) -> Any:
    """A JSON-able copy: NaN and infinities become null (JSON has neither), NumPy scalars and
    arrays and torch tensors become numbers and lists, tuples become lists."""
    if hasattr(obj, "tolist") and not isinstance(obj, str):  # numpy scalar / array, torch tensor
        obj = obj.tolist()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
