"""Fetch official dataset files: MD5-verified, written atomically, with a progress bar."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from medfool.errors import DownloadError
from medfool.utils.io import atomic_open
from medfool.utils.progress import progress

__all__ = ["CHUNK", "download", "md5sum"]

CHUNK = 1 << 20


def md5sum(path: str | os.PathLike[str]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, md5: str, *, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``target``; on a checksum mismatch or any failure nothing is left behind."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_open(target) as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress(total=total, unit="B", unit_scale=True, desc=f"download {target.name}") as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if digest.hexdigest() != md5:
                raise DownloadError(f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, expected {md5}); "
                                    "nothing was saved")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not download {target.name} from {url}: {reason}") from None
    return target
