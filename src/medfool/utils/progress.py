"""Progress bars: on for a terminal, off for logs and CI unless MEDFOOL_PROGRESS=1."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

__all__ = ["T", "progress"]

T = TypeVar("T")


def _enabled() -> bool:
    flag = os.environ.get("MEDFOOL_PROGRESS")
    if flag is not None:
        return flag not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Any:
    """A tqdm bar on stderr that stays quiet when nobody is watching."""
    kwargs.setdefault("disable", not _enabled())
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
