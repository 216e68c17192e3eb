"""Clean-performance metrics and the training loss, in torch: accuracy and ROC AUC (no
scikit-learn needed). They live beside the models because training selects epochs by them;
every layer above (defences, evaluation, runs) reads the same definitions."""

from __future__ import annotations

import math
from typing import Any

import torch

from medfool.data.dataset import Split
from medfool.errors import CheckpointError
from medfool.models.classifier import Classifier, logits_to_labels, logits_to_probs
from medfool.vocab import BINARY, MULTI_LABEL, Task

__all__ = ["binary_auc", "classification_metrics", "evaluate", "loss_fn", "predict_split"]


def binary_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half).

    Returns NaN when one of the two classes is absent (the AUC is undefined there).
    """
    scores = scores.double().flatten()
    positive = positive.bool().flatten()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average the ranks of tied scores
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, task: Task) -> dict[str, Any]:
    """Accuracy and AUC the MedMNIST way: macro one-vs-rest AUC for multi-class, the positive
    class's AUC for binary, per-label AUC (and their mean) plus mean per-label accuracy for
    multi-label."""
    probs = logits_to_probs(logits, task)
    preds = logits_to_labels(logits, task)
    out: dict[str, Any] = {"n": int(labels.shape[0])}
    if task == MULTI_LABEL:
        per_label = [binary_auc(probs[:, k], labels[:, k]) for k in range(labels.shape[1])]
        out["accuracy"] = float((preds == labels).float().mean())
        out["auc"] = _nanmean(per_label)
        out["auc_per_label"] = per_label
        return out
    out["accuracy"] = float((preds == labels).float().mean())
    if task == BINARY:
        out["auc"] = binary_auc(probs[:, 1], labels == 1)
    else:
        per_class = [binary_auc(probs[:, k], labels == k) for k in range(probs.shape[1])]
        out["auc"] = _nanmean(per_class)
        out["auc_per_class"] = per_class
    k = probs.shape[1]
    out["accuracy_per_class"] = [
        float((preds[labels == c] == c).float().mean()) if bool((labels == c).any()) else math.nan for c in range(k)
    ]
    return out


@torch.no_grad()
def predict_split(model: Classifier, split: Split, *, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for a whole split, batch by batch (works for lazy splits too)."""
    model.eval()
    logits, labels = [], []
    for start in range(0, len(split), batch_size):
        x, y = split.get(range(start, min(start + batch_size, len(split))))
        logits.append(model(x.to(model.device)).float().cpu())
        labels.append(y)
    out = torch.cat(logits)
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).any(dim=1).sum())
        raise CheckpointError(f"the model answers NaN or infinite values on {bad} of {len(split)} images of "
                              f"{split.origin or 'the split'}")
    return out, torch.cat(labels)


def evaluate(model: Classifier, split: Split, *, batch_size: int = 512) -> dict[str, Any]:
    logits, labels = predict_split(model, split, batch_size=batch_size)
    out = classification_metrics(logits, labels, model.task)
    out["loss"] = float(loss_fn(logits, labels, model.task))
    return out


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, task: Task) -> torch.Tensor:
    """The training loss for a task: BCE per label for multi-label, cross-entropy otherwise."""
    if task == MULTI_LABEL:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    if logits.shape[1] == 1:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    return torch.nn.functional.cross_entropy(logits, labels)
