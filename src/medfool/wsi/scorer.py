"""A slide's output with some of its tiles replaced, without reading the other tiles again.

Every aggregator here combines tiles that the tile model scores independently, so the slide's
answer with tile i changed needs only tile i's new score (or features): the others' are kept
from one pass over the slide. The attacks use this to evaluate thousands of candidates a second,
and the result is exactly what the whole pipeline gives on the changed slide (the attacks still
re-check every success from the written file).

* ``max``: the largest of the other tiles' malignancy and the new tile's;
* ``mean``: the mean with the replaced tiles' terms swapped;
* ``attention``: the attention-weighted sum with the replaced tiles' weights and features
  swapped (softmax written as shifted exponentials, so no bag is rebuilt).
"""

from __future__ import annotations

import torch

from medfool.errors import ConfigError
from medfool.models.classifier import Classifier
from medfool.models.features import deep_features
from medfool.wsi.aggregate import Aggregator, AttentionMIL, malignancy

__all__ = ["SlideScorer"]


class SlideScorer:
    """The slide's probability of malignancy for tiles replaced, the rest cached from ``tiles``
    (N, C, H, W) in [0, 1]."""

    def __init__(self, kind: Aggregator, model: Classifier, tiles: torch.Tensor,
                 mil: AttentionMIL | None = None) -> None:
        if kind == "attention" and mil is None:
            raise ConfigError("the attention aggregator needs a trained attention head ('medfool wsi train')")
        self.kind, self.model, self.mil = kind, model, mil
        self.n = int(tiles.shape[0])
        with torch.no_grad():
            if mil is not None and kind == "attention":
                self.features = deep_features(model, tiles)                    # (N, D)
                self.logits = mil.attention(self.features).squeeze(1)          # (N,) attention before softmax
                self.scores = torch.softmax(self.logits, 0)
            else:
                self.scores = malignancy(model, tiles)                          # (N,)

    def probability(self) -> float:
        """The unchanged slide's probability of malignancy."""
        with torch.no_grad():
            return float(self.with_tiles(torch.zeros(0, dtype=torch.long), None))

    def tile_terms(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(score or attention logit (m,), features (m, D) or None) of new tiles; differentiable."""
        if self.kind == "attention":
            assert self.mil is not None
            feats = deep_features(self.model, tiles)
            return self.mil.attention(feats).squeeze(1), feats
        return malignancy(self.model, tiles), None

    def replaced(self, index: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        """(m,) the slide's probability with tile ``index[j]`` replaced by ``tiles[j]``, each
        candidate j on its own (one changed tile per candidate)."""
        new, feats = self.tile_terms(tiles)
        index = index.to(self.scores.device)
        if self.kind == "max":
            top2 = self.scores.topk(min(2, self.n))
            rest = torch.where(index == top2.indices[0], top2.values[-1] if self.n > 1 else 0.0, top2.values[0])
            if self.n == 1:
                rest = torch.zeros_like(new)
            return torch.maximum(rest, new)
        if self.kind == "mean":  # in float64: a one-pixel change moves the sum of thousands by little
            total = self.scores.double().sum() - self.scores[index].double()
            return ((total + new.double()) / self.n).to(new.dtype)
        assert self.mil is not None and feats is not None
        shift = torch.maximum(self.logits.max(), new.detach())                   # (m,)
        e_rest = torch.exp(self.logits[None, :] - shift[:, None])                # (m, N)
        e_rest = e_rest.scatter(1, index[:, None], 0.0)                          # the others only, summed afresh
        e_new = torch.exp(new - shift)
        num = e_rest @ self.features + e_new[:, None] * feats
        den = e_rest.sum(1) + e_new
        return torch.sigmoid(self.mil.classify(num / den[:, None]).squeeze(1))

    def with_tiles(self, index: torch.Tensor, tiles: torch.Tensor | None) -> torch.Tensor:
        """() the slide's probability with the tiles ``index`` (t,) all replaced by ``tiles``
        (t, C, H, W) together; differentiable in ``tiles``."""
        keep = torch.ones(self.n, dtype=torch.bool, device=self.scores.device)
        keep[index.to(keep.device)] = False
        if tiles is None or tiles.shape[0] == 0:
            new, feats = self.scores.new_zeros(0), None
            if self.kind == "attention":
                new = self.logits.new_zeros(0)
                feats = self.features.new_zeros(0, self.features.shape[1])
        else:
            new, feats = self.tile_terms(tiles)
        if self.kind == "max":
            return torch.cat([self.scores[keep], new]).max()
        if self.kind == "mean":
            return torch.cat([self.scores[keep], new]).sum() / self.n
        assert self.mil is not None and feats is not None
        logits = torch.cat([self.logits[keep], new])
        weights = torch.softmax(logits, 0)
        pooled = weights @ torch.cat([self.features[keep], feats])
        return torch.sigmoid(self.mil.classify(pooled).squeeze(0))
