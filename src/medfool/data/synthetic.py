"""A small deterministic synthetic dataset for unit tests and an explicit ``--dataset synthetic``.

It is *not* medical data and is never chosen silently. Each class is a tinted texture of
oriented stripes plus seeded noise: easy enough that a small CNN learns it in seconds,
structured enough that attacks have gradients to follow.
"""

from __future__ import annotations

import numpy as np

from medfool.data.dataset import Dataset, DatasetInfo, make_split
from medfool.vocab import BINARY, MULTI_CLASS, MULTI_LABEL, SPLITS, Task

__all__ = ["make_synthetic"]


def make_synthetic(*, n_classes: int = 3, channels: int = 3, size: int = 28, per_split: tuple[int, int, int] = (
        300, 60, 90), seed: int = 0, task: Task = MULTI_CLASS) -> Dataset:
    if task == BINARY:
        n_classes = 2
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    info = DatasetInfo(
        name="synthetic", task=task, class_names=tuple(f"pattern_{i}" for i in range(n_classes)),
        n_channels=channels, image_size=(size, size), critical_classes=(n_classes - 1,) if task != MULTI_LABEL
        else (), source="generated", notes=("synthetic data: not medical images",),
    )
    splits = {}
    for name, n in zip(SPLITS, per_split, strict=True):
        if task == MULTI_LABEL:
            labels = (rng.random((n, n_classes)) < 0.4).astype(np.int64)
            patterns = labels.astype(np.float32)
        else:
            labels = np.arange(n) % n_classes
            rng.shuffle(labels)
            patterns = np.eye(n_classes, dtype=np.float32)[labels]
        images = np.zeros((n, size, size, channels), np.float32)
        for k in range(n_classes):
            angle = np.pi * k / n_classes
            stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * (np.cos(angle) * xx + np.sin(angle) * yy))
            tint = 0.6 + 0.4 * np.sin(np.arange(channels) + k)  # (C,)
            images += patterns[:, k, None, None, None] * stripes[None, :, :, None] * tint / max(1, n_classes / 2)
        images = 0.25 + 0.5 * images / max(1e-6, images.max()) + rng.normal(0, 0.06, images.shape)
        images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        splits[name] = make_split(images, labels, info, f"synthetic[{name}]")
    return Dataset(info, splits)
