"""Spectral signatures (Tran et al. 2018).

Tran, Li & Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018.

Within a label, the poisons' mean representation differs from the clean samples' along one
direction, which then dominates the covariance: score each sample by its squared projection
on the top singular vector of the centred representations, and remove the
``1.5 * eps`` highest-scoring share of every label, ``eps`` being the defender's bound on the
share of poisons in a label. The paper removes that share from every label; ``classes="auto"``
keeps the removal to labels whose score distribution shows an outlying group (the top
``eps`` of scores above ``ratio`` times the label's median score), so clean labels lose nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medfool.data.dataset import Split
from medfool.defences.backdoor.features import label_activations
from medfool.defences.backdoor.flags import SampleFlags
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier

__all__ = ["spectral_scores", "spectral_signatures"]


def spectral_scores(z: torch.Tensor) -> torch.Tensor:
    """Squared projection on the top right singular vector of the centred rows. (n, D) -> (n,)."""
    z = z.double() - z.double().mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(z, full_matrices=False)
    out: torch.Tensor = (z @ v[0]) ** 2
    return out


def spectral_signatures(model: Classifier, train: Split, *, eps: float = 0.5, classes: str = "auto",
                        ratio: float = 10.0, features: torch.Tensor | None = None) -> SampleFlags:
    """Flag the top ``1.5 * eps`` share of scores in each examined label (all labels with
    ``classes="all"``, as in the paper; those with an outlying group with ``"auto"``)."""
    if not 0 < eps <= 2 / 3:
        raise ConfigError(f"spectral eps must be in (0, 2/3] (1.5 * eps of a label is removed), got {eps}")
    if classes not in ("auto", "all"):
        raise ConfigError(f"spectral classes must be 'auto' or 'all', got {classes!r}")
    scores = np.zeros(len(train))
    flagged = np.zeros(len(train), dtype=bool)
    per_class: dict[str, Any] = {}
    for label, idx, z_label in label_activations(model, train, features):
        s = spectral_scores(z_label)
        order = torch.argsort(s, descending=True)
        top = s[order[: max(1, int(eps * idx.size))]]
        outlying = float(top.median() / s.median().clamp_min(1e-12))
        scores[idx] = (s / s.median().clamp_min(1e-12)).numpy()
        examine = classes == "all" or outlying >= ratio
        if examine:
            flagged[idx[order[: round(1.5 * eps * idx.size)].numpy()]] = True
        per_class[str(label)] = {"size": int(idx.size), "outlying": outlying, "flagged": examine}
    return SampleFlags("spectral-signatures", scores, flagged,
                       {"eps": eps, "classes": classes, "ratio": ratio, "per_class": per_class})
