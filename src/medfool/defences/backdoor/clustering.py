"""Activation clustering (Chen et al. 2018).

Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy & Srivastava, "Detecting Backdoor
Attacks on Deep Neural Networks by Activation Clustering", AAAI SafeAI workshop 2019
(arXiv:1811.03728).

Poisons relabelled into a class are classified by the trigger, not by the content the rest
of the class shares, so within that class their activations form a second, smaller group.
Per training label: project the penultimate activations onto their top principal
components (the paper uses ICA; the leading PCA directions carry the same split), split in
two with k-means, and flag the smaller cluster when it is small (relative size <= 35 %,
the paper's threshold) *and* the split is real (silhouette >= ``min_silhouette``): a clean
class split in two gives overlapping halves with a low silhouette.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medfool.data.dataset import Split
from medfool.defences.backdoor.features import label_activations
from medfool.defences.backdoor.flags import SampleFlags
from medfool.models.classifier import Classifier

__all__ = ["activation_clustering", "kmeans2", "reduce_dims", "silhouette"]


def reduce_dims(z: torch.Tensor, dims: int) -> torch.Tensor:
    """Centre and project onto the top ``dims`` principal directions. Shape: (n, D) -> (n, <=dims)."""
    z = z.double() - z.double().mean(0, keepdim=True)
    k = min(dims, z.shape[0] - 1, z.shape[1])
    if k < 1:
        return z[:, :0]
    _, _, v = torch.linalg.svd(z, full_matrices=False)
    out: torch.Tensor = z @ v[:k].T
    return out


def kmeans2(z: torch.Tensor, gen: torch.Generator, *, restarts: int = 10, iters: int = 100) -> torch.Tensor:
    """Two-means with k-means++ starts; the restart with the lowest inertia wins. (n, d) -> (n,) in {0, 1}."""
    n = z.shape[0]
    best, best_inertia = torch.zeros(n, dtype=torch.long), float("inf")
    for _ in range(restarts):
        first = z[torch.randint(n, (1,), generator=gen)]
        d2 = ((z - first) ** 2).sum(1)
        second = z[torch.multinomial(d2 / d2.sum(), 1, generator=gen)] if float(d2.sum()) > 0 else first
        centres = torch.cat([first, second])
        assign = torch.zeros(n, dtype=torch.long)
        for _ in range(iters):
            new = torch.cdist(z, centres).argmin(1)
            if torch.equal(new, assign) and _ > 0:
                break
            assign = new
            for c in (0, 1):
                if bool((assign == c).any()):
                    centres[c] = z[assign == c].mean(0)
        inertia = float(((z - centres[assign]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = assign.clone(), inertia
    return best


def silhouette(z: torch.Tensor, assign: torch.Tensor) -> float:
    """Mean silhouette coefficient of a two-cluster split (exact; O(n^2) distances in chunks)."""
    n = z.shape[0]
    sizes = torch.bincount(assign, minlength=2).double()
    if n < 3 or bool((sizes < 2).any()):
        return 0.0
    total = 0.0
    for start in range(0, n, 2048):
        d = torch.cdist(z[start:start + 2048], z)  # (b, n)
        sums = torch.stack([d[:, assign == c].sum(1) for c in (0, 1)], 1)  # (b, 2)
        own = assign[start:start + 2048]
        own_n = sizes[own]
        a = sums.gather(1, own.view(-1, 1)).squeeze(1) / (own_n - 1)
        b = sums.gather(1, (1 - own).view(-1, 1)).squeeze(1) / sizes[1 - own]
        total += float(((b - a) / torch.maximum(a, b).clamp_min(1e-12)).sum())
    return total / n


def activation_clustering(model: Classifier, train: Split, *, dims: int = 10, max_size: float = 0.35,
                          min_silhouette: float = 0.15, seed: int = 0,
                          features: torch.Tensor | None = None, infected: Sequence[int] | None = None) -> SampleFlags:
    """Flag the small, well-separated activation cluster of each training label.

    ``infected``: labels another detector already found backdoored (Neural Cleanse names the
    label, not the samples). Only those are examined and their smaller cluster is flagged
    outright: the size rule exists to spare clean labels, and a small class can hold more than
    35 % poisons (PathMNIST's normal colon mucosa: 35 poisons beside 54 real tiles).

    Scores are the distance to the own cluster's centre minus the distance to the other's,
    for members of a class's smaller cluster (positive = more like the small group)."""
    gen = torch.Generator().manual_seed(seed)
    scores = np.zeros(len(train))
    flagged = np.zeros(len(train), dtype=bool)
    per_class: dict[str, Any] = {}
    for label, idx, z_label in label_activations(model, train, features):
        if infected is not None and label not in infected:
            continue
        z = reduce_dims(z_label, dims)
        assign = kmeans2(z, gen)
        sizes = torch.bincount(assign, minlength=2)
        small = int(sizes.argmin())
        rel = float(sizes[small]) / idx.size
        sil = silhouette(z, assign)
        centres = torch.stack([z[assign == c].mean(0) for c in (0, 1)])
        d = torch.cdist(z, centres)
        scores[idx] = (d[:, 1 - small] - d[:, small]).numpy()
        poisoned_class = infected is not None or (rel <= max_size and sil >= min_silhouette)
        if poisoned_class:
            flagged[idx[(assign == small).numpy()]] = True
        per_class[str(label)] = {"size": int(idx.size), "small_cluster": rel, "silhouette": sil,
                                 "flagged": poisoned_class}
    return SampleFlags("activation-clustering" if infected is None else "nc-guided-clustering", scores, flagged,
                       {"dims": dims, "max_size": max_size, "min_silhouette": min_silhouette, "classes": per_class})
