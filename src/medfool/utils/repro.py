"""Reproducibility: every run records its seed, versions and config."""

from __future__ import annotations

import platform
import random
import sys
from typing import Any

import numpy as np
import torch


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
    from medfool import __version__

    return {
        "medfool": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
