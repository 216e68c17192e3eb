"""A model wrapper that counts every image it is asked about (shared by the benchmarks)."""

from __future__ import annotations

import torch
from torch import nn


class Counting(nn.Module):
    """Counts every image the wrapped model is asked about."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model(x)  # type: ignore[no-any-return]
