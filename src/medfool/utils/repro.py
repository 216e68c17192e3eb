"""Reproducibility: every run records its seed, versions and config."""

from __future__ import annotations

import hashlib
import json
import platform
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool import __version__

__all__ = ["environment", "file_digest", "fingerprint", "seed_everything"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed the global RNGs (for third-party code we do not control) and return a generator.

    medfool's own code draws randomness only from the returned generator.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def environment() -> dict[str, Any]:
    """Versions and machine facts to store next to every result."""
    return {
        "medfool": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def fingerprint(obj: Any) -> str:
    """A short digest of a JSON-able description of a computation (settings, inputs' digests).

    Outputs that carry the fingerprint they were made with can be reused by a rerun with the
    same settings (resume) and are recomputed when anything differs.
    """
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (or of a folder's files, in name order)."""
    digest = hashlib.sha256()
    p = Path(path)
    for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
        if f.is_file():
            with open(f, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()
