"""Seeded, stratified splits for files that ship without val/test splits."""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_FRACTIONS", "stratified_split"]

# Documented default: 70 % train, 10 % validation, 20 % held-out test.
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Partition indices so that every class keeps (almost exactly) the same proportions in every part.

    Each class is shuffled by one generator seeded with ``seed``; its members get keys spread
    evenly over [0, 1) and all samples are ordered by key, so cutting that one ordered list at
    the global counts gives exact part sizes *and* per-class proportions within one sample.
    Multi-label sets are stratified on their first positive label (or 'no finding').
    Returned indices are sorted.
    """
    if not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"split fractions must add up to 1, got {sum(fractions.values())}")
    labels = np.asarray(labels)
    strata = labels if labels.ndim == 1 else np.where(labels.any(1), labels.argmax(1), -1)
    n = len(strata)
    rng = np.random.default_rng(seed)
    keys = np.empty(n, dtype=np.float64)
    for cls in np.unique(strata):
        members = np.flatnonzero(strata == cls)
        members = members[rng.permutation(len(members))]
        keys[members] = (np.arange(len(members)) + rng.random()) / len(members)
    order = np.lexsort((rng.random(n), keys))
    names = list(fractions)
    exact = np.array([fractions[k] * n for k in names])
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]] += 1
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {name: np.sort(order[bounds[i]:bounds[i + 1]]) for i, name in enumerate(names)}
