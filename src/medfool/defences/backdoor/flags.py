"""What a training-set detector returns, and how it is scored against the ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medfool.models.metrics import binary_auc

__all__ = ["SampleFlags", "detection_rates"]


@dataclass
class SampleFlags:
    """Per-sample suspicion over a training set: ``scores`` (N,), higher is more suspicious
    (comparable within a class), and the detector's own decision ``flagged`` (N,) bool."""

    detector: str
    scores: np.ndarray
    flagged: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> np.ndarray:
        return np.flatnonzero(self.flagged)


def detection_rates(flags: SampleFlags, poisoned: np.ndarray) -> dict[str, Any]:
    """TPR (share of poisons flagged), FPR (share of clean samples flagged), precision and the
    threshold-free AUROC of the scores, against the ground-truth mask ``poisoned`` (N,) bool."""
    truth = np.asarray(poisoned, dtype=bool)
    hit = flags.flagged & truth
    false = flags.flagged & ~truth
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    return {
        "detector": flags.detector,
        "tpr": int(hit.sum()) / n_pos if n_pos else float("nan"),
        "fpr": int(false.sum()) / n_neg if n_neg else float("nan"),
        "flagged": int(flags.flagged.sum()), "true_positives": int(hit.sum()), "false_positives": int(false.sum()),
        "precision": int(hit.sum()) / int(flags.flagged.sum()) if flags.flagged.any() else float("nan"),
        "auroc": binary_auc(torch.from_numpy(flags.scores.astype(np.float64)), torch.from_numpy(truth)),
        "n_poisoned": n_pos, "n_clean": n_neg,
    }
