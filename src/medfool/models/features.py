"""Deep features of a model, captured during its forward pass: what detectors, stateful
detectors and attention pooling over tiles read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from medfool.errors import ConfigError
from medfool.models.classifier import Classifier

__all__ = ["FeatureTap", "deep_features"]


class FeatureTap:
    """Captures activations during the model's forward pass: the input of the last linear layer
    (deep features) and the outputs of pooling layers (LID's taps)."""

    def __init__(self, model: Classifier) -> None:
        self.model = model
        linears = [m for m in model.network.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError("detectors need a network whose last layer is linear (deep features); "
                              f"{model.meta.arch or 'this model'} has none")
        self.last = linears[-1]
        self.pools = [m for m in model.network.modules()
                      if isinstance(m, nn.MaxPool2d | nn.AdaptiveAvgPool2d | nn.AvgPool2d)]
        self.captured: dict[str, list[torch.Tensor]] = {}

    @contextmanager
    def tapping(self) -> Iterator[dict[str, list[torch.Tensor]]]:
        self.captured = {"features": [], "layers": []}
        hooks = [self.last.register_forward_pre_hook(lambda _m, args: self.captured["features"].append(args[0]))]
        hooks += [p.register_forward_hook(lambda _m, _a, out: self.captured["layers"].append(out))
                  for p in self.pools]
        try:
            yield self.captured
        finally:
            for h in hooks:
                h.remove()

    def deep(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D): the last linear layer's input alone, for ``x`` (moved to the model's device)."""
        with self.tapping() as got:
            self.model(x.to(self.model.device))
        # a padded forward (Classifier.padded) runs fixed-size chunks: every chunk's rows, then the real ones
        return torch.cat([f.flatten(1) for f in got["features"]])[: x.shape[0]]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(deep features (N, D), flattened activations per tap, logits). The deep features are
        the last linear layer's input followed by the mean and standard deviation of every
        channel at each tap: adversarial noise shows in early layers' statistics first."""
        with self.tapping() as got:
            logits = self.model(x)
        n, chunks = x.shape[0], max(1, len(got["features"]))
        # a padded forward (Classifier.padded) runs fixed-size chunks, zero images appended: join
        # each tap's chunks in order and keep the real rows
        per = len(got["layers"]) // chunks
        layers = [torch.cat([got["layers"][c * per + t] for c in range(chunks)])[:n] for t in range(per)]
        features = torch.cat(got["features"])[:n]
        stats = [torch.cat([a.mean(dim=(2, 3)), a.std(dim=(2, 3))], dim=1) for a in layers
                 if a.dim() == 4 and a.shape[2] * a.shape[3] > 1]
        feats = torch.cat([features.flatten(1), *stats], dim=1)
        return feats, [a.flatten(1) for a in layers], logits


def deep_features(model: Classifier, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """(N, D) the model's deep features (the last linear layer's input) for many images, in
    padded chunks of ``batch`` (an image's features never depend on its batch); differentiable."""
    tap = FeatureTap(model)
    with model.padded():
        out = [tap.deep(x[s:s + batch]) for s in range(0, x.shape[0], batch)]
    return torch.cat(out) if out else torch.zeros(0, 0)
