"""Seeded, stratified splits for files that ship without val/test splits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from medfool.data.dataset import Split
from medfool.errors import DataError
from medfool.vocab import SplitName

__all__ = ["DEFAULT_FRACTIONS", "carve_from_train", "stratified_split"]

# Documented default: 70 % train, 10 % validation, 20 % held-out test.
DEFAULT_FRACTIONS: dict[SplitName, float] = {"train": 0.7, "val": 0.1, "test": 0.2}

K = TypeVar("K", bound=str)  # the parts' names


def stratified_split(labels: np.ndarray, fractions: dict[K, float], seed: int) -> dict[K, np.ndarray]:
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


def carve_from_train(train: Split, missing: Sequence[SplitName], seed: int,
                     name: str) -> tuple[dict[SplitName, Split], str]:
    """The ``missing`` splits cut out of ``train`` with a seeded stratified split, train's
    share and theirs in the proportions of :data:`DEFAULT_FRACTIONS` (train 70 : val 10 :
    test 20): the new train and missing splits, and the note that says so for ``name``."""
    fractions: dict[SplitName, float] = {"train": DEFAULT_FRACTIONS["train"],
                                         **{s: DEFAULT_FRACTIONS[s] for s in missing}}
    total = sum(fractions.values())
    fractions = {k: v / total for k, v in fractions.items()}
    parts = stratified_split(train.labels.numpy(), fractions, seed=seed)
    for part, idx in parts.items():
        if len(idx) == 0:
            raise DataError(f"{train.origin}: too few images to make a non-empty {part!r} split")
    pct = ", ".join(f"{k} {round(100 * v)}%" for k, v in fractions.items())
    note = (f"{name} has no {'/'.join(missing)} split: medfool made a stratified split of its train images ({pct}, "
            f"seed {seed})")
    return {part: train.subset(idx) for part, idx in parts.items()}, note
