"""Slide models: a tile classifier (any medfool model) and an aggregator from its tiles to one
slide diagnosis.

* ``max`` (Campanella et al., "Clinical-grade computational pathology using weakly supervised
  deep learning on whole slide images", Nature Medicine 2019): the slide is as malignant as its
  most malignant tile;
* ``mean``: the mean of the tiles' malignancy;
* ``attention`` (Ilse, Tomczak & Welling, "Attention-based deep multiple instance learning",
  ICML 2018): tiles' deep features weighted by a learned attention, pooled and classified;
  trained on slides with slide labels only (the tile classifier stays frozen).

A tile's malignancy is the probability the tile classifier gives its critical (malignant)
classes together. Every aggregator returns the slide's probability of malignancy and a score per
tile (malignancy, or attention weight) that the heat map draws and the slide attacks use to
choose tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import torch
import torch.nn as nn

from medfool.errors import ConfigError
from medfool.models.classifier import Classifier, logits_to_probs
from medfool.models.features import deep_features

__all__ = ["AGGREGATORS", "Aggregator", "AttentionMIL", "SlideOutput", "aggregate", "calibrate_threshold",
           "malignancy", "train_attention"]

Aggregator = Literal["max", "mean", "attention"]
AGGREGATORS: tuple[Aggregator, ...] = ("max", "mean", "attention")


@dataclass(frozen=True)
class SlideOutput:
    probability: torch.Tensor  # () the slide's probability of malignancy
    tile_scores: torch.Tensor  # (N,) malignancy or attention per tile


def malignancy(model: Classifier, tiles: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N,) each tile's probability of the model's critical classes together. Shape: tiles
    (N, C, H, W) in [0, 1]."""
    critical = list(model.meta.critical_classes)
    if not critical:
        raise ConfigError("the tile model names no malignant (critical) classes; a slide diagnosis needs them")
    out = []
    with model.padded():  # a tile's score never depends on how many tiles share its batch
        for s in range(0, tiles.shape[0], batch):
            probs = logits_to_probs(model(tiles[s:s + batch].to(model.device)), model.task)
            out.append(probs[:, critical].sum(1))
    return torch.cat(out) if out else torch.zeros(0)


class AttentionMIL(nn.Module):
    """Ilse et al.'s attention pooling over a bag of tile features: a_k = softmax_k(w^T tanh(V h_k)),
    z = sum_k a_k h_k, slide logit = u^T z + b."""

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.attention = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.classify = nn.Linear(dim, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slide logit (), attention weights (N,)) for features (N, D)."""
        weights = torch.softmax(self.attention(features).squeeze(1), dim=0)
        pooled = (weights[:, None] * features).sum(0)
        return self.classify(pooled).squeeze(0), weights


def aggregate(kind: Aggregator, model: Classifier, tiles: torch.Tensor,
              mil: AttentionMIL | None = None) -> SlideOutput:
    """The slide's output from its tiles (N, C, H, W) in [0, 1]; differentiable in the tiles."""
    if kind == "attention":
        if mil is None:
            raise ConfigError("the attention aggregator needs a trained attention head ('medfool wsi train')")
        logit, weights = mil(deep_features(model, tiles))
        return SlideOutput(torch.sigmoid(logit), weights)
    m = malignancy(model, tiles)
    if kind == "max":
        return SlideOutput(m.max() if m.numel() else torch.tensor(0.0), m)
    if kind == "mean":
        return SlideOutput(m.mean() if m.numel() else torch.tensor(0.0), m)
    raise ConfigError(f"unknown aggregator {kind!r}; choose from {', '.join(AGGREGATORS)}")


def train_attention(bags: list[torch.Tensor], labels: list[int], *, epochs: int = 40, lr: float = 1e-3,
                    hidden: int = 64, seed: int = 0) -> AttentionMIL:
    """An attention head trained on bags of tile features (D each) with slide labels (1:
    malignant), one bag per step, Adam, binary cross-entropy."""
    if not bags or len(bags) != len(labels):
        raise ConfigError("attention MIL needs at least one slide with a label")
    torch.manual_seed(seed)
    mil = AttentionMIL(bags[0].shape[1], hidden)
    opt = torch.optim.Adam(mil.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        for i in torch.randperm(len(bags), generator=gen).tolist():
            logit, _ = mil(bags[i])
            loss = loss_fn(logit, torch.tensor(float(labels[i])))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return mil.eval()


def calibrate_threshold(probabilities: list[float], labels: list[int]) -> float:
    """The slide-level operating point: of the thresholds between consecutive slide
    probabilities, the one with the best balanced accuracy on these (training) slides, ties
    broken by the widest gap (the middle of it). Max pooling over thousands of tiles reads a
    benign slide as malignant when any one tile is misread, so its threshold cannot stay at 0.5
    (Campanella et al. chose theirs on validation slides too)."""
    if len(set(labels)) < 2 or len(probabilities) != len(labels):
        raise ConfigError("choosing a threshold needs benign and malignant slides")
    values = sorted(set(probabilities))
    cuts = [0.5 * (a + b) for a, b in pairwise(values)] or [values[0]]
    gaps = [b - a for a, b in pairwise(values)] or [0.0]

    def balanced(t: float) -> float:
        per = []
        for c in (0, 1):
            member = [p for p, y in zip(probabilities, labels, strict=True) if y == c]
            per.append(sum((p >= t) == bool(c) for p in member) / len(member))
        return sum(per) / 2

    return max(zip(cuts, gaps, strict=True), key=lambda cg: (balanced(cg[0]), cg[1]))[0]
