"""Device selection shared by every command (``--device auto|cpu|cuda``)."""

from __future__ import annotations

import torch

from medfool.errors import ConfigError
from medfool.vocab import DEVICE_CHOICES

__all__ = ["DEVICE_CHOICES", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a user's device choice into a ``torch.device``; 'auto' prefers CUDA when present.

    ``name`` is a :data:`~medfool.vocab.Device` or any torch CUDA device name ('cuda:1'),
    hence a plain ``str``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} asked for, but no CUDA device is available (use cpu or auto)")
        return torch.device(name)
    raise ConfigError(f"device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")
