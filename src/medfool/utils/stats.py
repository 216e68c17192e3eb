"""What an accuracy on a sample means: per class, balanced, with its 95 % interval, beside the
accuracy a constant answer would get on the same sample.

A robust accuracy read alone flatters an imbalanced sample: on a PneumoniaMNIST sample that
is 59 % pneumonia, a model that always answers "pneumonia" keeps 59 % at any budget. Every
robust accuracy medfool shows comes with this breakdown (:func:`accuracy_breakdown`), computed
from per-image correctness and labels, so the report, ``medfool attack`` and ``medfool defend``
all read the same definitions.

Intervals are Wilson score intervals (Wilson, JASA 1927), which stay inside [0, 1] and behave
at 0 and 100 %; the balanced accuracy's interval is the normal approximation of the mean of
independent per-class proportions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["IMBALANCE_MARGIN", "Z95", "accuracy_breakdown", "balanced_interval", "is_imbalanced", "positive_class",
           "wilson"]

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials; (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact at the ends: no successes cannot be above 0, all successes cannot be below 1
    return (0.0 if k == 0 else min(p, max(0.0, centre - half)),
            1.0 if k == n else max(p, min(1.0, centre + half)))


def balanced_interval(per_class: Sequence[tuple[int, int]], z: float = Z95) -> tuple[float, float]:
    """Normal-approximation 95 % interval of the mean of per-class proportions (k, n), each class
    an independent binomial; the Wilson centre keeps classes at 0 % or 100 % from a zero width."""
    present = [(k, n) for k, n in per_class if n > 0]
    if not present:
        return math.nan, math.nan
    m = len(present)
    mean = sum(k / n for k, n in present) / m
    # each class's variance at its Wilson-adjusted proportion (never 0 at 0 % or 100 %)
    var = sum(((k + z * z / 2) / (n + z * z)) * (1 - (k + z * z / 2) / (n + z * z)) / n for k, n in present) / m**2
    half = z * math.sqrt(var)
    return max(0.0, mean - half), min(1.0, mean + half)


def accuracy_breakdown(correct: Sequence[bool] | Sequence[int], labels: Sequence[int] | None,
                       class_names: Sequence[str], *, positive: int | None = None) -> dict[str, Any]:
    """Accuracy of a sample (after an attack: its robust accuracy), broken down.

    ``correct[i]``: image i is (still) classified correctly; ``labels[i]``: its class (None for
    multi-label samples, which get the overall figure only). ``positive``: the class whose
    recall is the sensitivity of a binary task (default: class 1).

    Returns ``n``, ``accuracy`` and its ``ci95``; per class (``per_class``: name -> n, correct,
    accuracy, ci95); ``balanced`` (the mean of the per-class accuracies over the classes present)
    and its ``balanced_ci95``; the constant-classifier line ``constant`` (the majority class's
    share of the sample: what answering that class every time keeps at any budget; its
    balanced accuracy is ``1 / classes present``) with ``majority`` naming the class and
    ``above_constant`` the margin; and for two classes ``sensitivity`` and ``specificity``.
    """
    flags = [bool(c) for c in correct]
    n = len(flags)
    k = sum(flags)
    lo, hi = wilson(k, n)
    out: dict[str, Any] = {"n": n, "correct": k, "accuracy": k / n if n else math.nan, "ci95": [lo, hi]}
    if labels is None:
        return out
    labels = [int(v) for v in labels]
    if len(labels) != n:
        raise ValueError(f"labels must have one entry per image ({n}), got {len(labels)}")
    counts: dict[int, list[int]] = {}
    for flag, label in zip(flags, labels, strict=True):
        hit_total = counts.setdefault(label, [0, 0])
        hit_total[0] += int(flag)
        hit_total[1] += 1
    per_class: dict[str, Any] = {}
    for c in sorted(counts):
        kc, nc = counts[c]
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        per_class[name] = {"class": c, "n": nc, "correct": kc, "accuracy": kc / nc, "ci95": list(wilson(kc, nc))}
    out["per_class"] = per_class
    pairs = [(kc, nc) for kc, nc in counts.values()]
    out["balanced"] = sum(kc / nc for kc, nc in pairs) / len(pairs) if pairs else math.nan
    out["balanced_ci95"] = list(balanced_interval(pairs))
    if pairs:
        majority = max(sorted(counts), key=lambda c: counts[c][1])
        out["majority"] = class_names[majority] if 0 <= majority < len(class_names) else str(majority)
        out["constant"] = counts[majority][1] / n
        out["constant_balanced"] = 1 / len(pairs)
        out["above_constant"] = out["accuracy"] - out["constant"]
    if len(class_names) == 2:
        pos = 1 if positive is None else positive
        tp, npos = counts.get(pos, [0, 0])
        tn, nneg = counts.get(1 - pos, [0, 0])
        out["positive"] = class_names[pos]
        out["sensitivity"] = tp / npos if npos else math.nan
        out["sensitivity_ci95"] = list(wilson(tp, npos))
        out["specificity"] = tn / nneg if nneg else math.nan
        out["specificity_ci95"] = list(wilson(tn, nneg))
    return out


def positive_class(critical: Sequence[int], num_classes: int) -> int | None:
    """The class whose recall is a binary task's sensitivity: the model's critical class when it
    names exactly one, else None (``accuracy_breakdown`` then takes class 1)."""
    return int(critical[0]) if num_classes == 2 and len(critical) == 1 else None


IMBALANCE_MARGIN = 0.05
"""How far above an even share (1/K) the largest class of a sample may be before the sample
counts as imbalanced (:func:`is_imbalanced`)."""


def is_imbalanced(breakdown: dict[str, Any], num_classes: int) -> bool:
    """Whether the sample behind ``breakdown`` (an :func:`accuracy_breakdown`) is imbalanced: its
    largest class's share is above 1/K + :data:`IMBALANCE_MARGIN`, K the task's ``num_classes``
    (above 55 % for two classes, 38.3 % for three, 16.1 % for nine). On such a sample a plain
    accuracy rewards leaning to the majority, so the balanced accuracy is the headline. The margin
    is small on purpose: a 59 % majority of two classes already lets a constant answer look 9
    points better than chance, and calling a nearly even sample imbalanced costs nothing (its
    balanced and plain accuracies then agree). Multi-label samples (no class shares) are not."""
    k = max(num_classes, len(breakdown.get("per_class", {})))
    return "constant" in breakdown and k > 0 and breakdown["constant"] > 1 / k + IMBALANCE_MARGIN
