"""The representation the training-set detectors look at.

The papers take "the last hidden layer". In a CNN that ends in global average pooling, the
pooled vector has lost *where* things are: a corner trigger and the target class's texture
average into the same vector (on PathMNIST the poisons' pooled activations are inseparable
from the target class's, AUROC ~0.5, while the feature map just before pooling separates
them completely). So the default is the last feature map before the global pooling,
average-pooled to at most ``spatial`` x ``spatial`` cells to bound its size; networks without
a global pooling layer use the input of their last linear layer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from medfool.data.dataset import Split
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier

__all__ = ["class_groups", "label_activations", "representation"]

_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _tap(model: Classifier, spatial: int) -> tuple[nn.Module, bool]:
    """The module whose *input* is the representation, and whether that input is a feature map."""
    modules = list(model.network.modules())
    if spatial > 0:
        pools = [m for m in modules if isinstance(m, _POOLS)]
        if pools:
            return pools[-1], True
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("backdoor detectors need a network with a global pooling or a final linear layer "
                          "(its input is the representation they inspect)")
    return linears[-1], False


def representation(model: Classifier, split: Split, *, index: np.ndarray | None = None, spatial: int = 4,
                   batch_size: int = 512) -> torch.Tensor:
    """Activations of the images of ``split`` (all, or ``index``): the last feature map pooled to
    at most ``spatial`` x ``spatial`` (``spatial=0``: the input of the last linear layer).
    Shape: (N, D) float32 on the CPU."""
    captured: list[torch.Tensor] = []
    tap, is_map = _tap(model, spatial)

    def keep(_m: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        z = inputs[0].detach().float()
        if is_map and z.ndim == 4 and max(z.shape[-2:]) > spatial:
            z = nn.functional.adaptive_avg_pool2d(z, (min(spatial, z.shape[-2]), min(spatial, z.shape[-1])))
        captured.append(z.flatten(1).cpu())

    hook = tap.register_forward_hook(keep)
    idx = np.arange(len(split)) if index is None else np.asarray(index)
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, idx.size, batch_size):
                x, _ = split.get(idx[start:start + batch_size])
                model(x.to(model.device))
    finally:
        hook.remove()
    return torch.cat(captured) if captured else torch.zeros(0, 0)


def class_groups(labels: torch.Tensor) -> dict[int, np.ndarray]:
    """Indices of the samples of each (training) label; multi-label sets are grouped by their
    first positive label, -1 for none: a backdoor relabels its poisons into one such group."""
    y = labels.numpy()
    key = y if y.ndim == 1 else np.where(y.any(1), y.argmax(1), -1)
    return {int(k): np.flatnonzero(key == k) for k in np.unique(key)}


def label_activations(model: Classifier, train: Split, features: torch.Tensor | None = None,
                      min_size: int = 4) -> Iterator[tuple[int, np.ndarray, torch.Tensor]]:
    """Each training label's sample indices and activations (labels with fewer than ``min_size``
    samples are skipped: nothing can be split or ranked there)."""
    z_all = features if features is not None else representation(model, train)
    for label, idx in class_groups(train.labels).items():
        if idx.size >= min_size:
            yield label, idx, z_all[torch.as_tensor(idx)]
