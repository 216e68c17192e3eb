"""Seeded, stratified splits for files that ship without val/test splits."""

from __future__ import annotations

import numpy as np

# Documented default: 70 % train, 10 % validation, 20 % held-out test.
DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Partition indices so that every class keeps the same proportions in every part.

    Multi-label sets are stratified on their first positive label (or 'no finding').
    Each class is shuffled with one generator seeded by ``seed``; the largest-remainder rule
    rounds per class so the parts add up exactly. Returned indices are sorted.
    """
    if not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"split fractions must add up to 1, got {sum(fractions.values())}")
    labels = np.asarray(labels)
    strata = labels if labels.ndim == 1 else np.where(labels.any(1), labels.argmax(1), -1)
    rng = np.random.default_rng(seed)
    names = list(fractions)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for cls in np.unique(strata):
        members = np.flatnonzero(strata == cls)
        members = members[rng.permutation(len(members))]
        exact = np.array([fractions[n] * len(members) for n in names])
        counts = np.floor(exact).astype(int)
        short = len(members) - counts.sum()
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
        start = 0
        for name, count in zip(names, counts, strict=True):
            parts[name].append(members[start:start + count])
            start += count
    return {n: np.sort(np.concatenate(parts[n])) if parts[n] else np.empty(0, np.int64) for n in names}
