"""Randomized smoothing: certified L2 robustness (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier g(x) answers the class the base model f gives most often on
x + N(0, sigma^2 I). CERTIFY (the paper's Algorithm 1, pixel units in [0, 1]): ``n0`` noisy
copies pick the candidate class; ``n`` fresh copies count how often f gives it; the one-sided
Clopper-Pearson lower bound pA on that probability at confidence 1 - ``alpha`` gives the
certified radius R = sigma * Phi^-1(pA), and the answer is abstain when pA <= 1/2. The base
model should be trained with the same noise (``medfool defend adv-train --method noise``).

Each image draws its noise from its own generator keyed by (seed, image id), so a
certificate never depends on the rest of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medfool.errors import ConfigError
from medfool.models.classifier import Classifier, logits_to_labels
from medfool.utils.progress import progress
from medfool.vocab import MULTI_LABEL

__all__ = ["Certificate", "binomial_lower_bound", "certified_accuracy", "certify", "trained_sigma"]


def trained_sigma(record: Mapping[str, Any]) -> float | None:
    """The noise level a checkpoint's model was trained with (``adv-train --method noise``), or
    None when its training record holds no noise objective. Other objectives record a sigma
    too (the field's default, unused), so the method decides, not the field."""
    objective = record.get("objective") or {}
    if objective.get("method") != "noise" or objective.get("sigma") is None:
        return None
    return float(objective["sigma"])


def _log_binom_tail(k: int, n: int, p: float) -> float:
    """log P(X >= k) for X ~ Binomial(n, p), exactly (sum of log-pmfs in float64)."""
    if k <= 0:
        return 0.0
    if p <= 0:
        return -math.inf
    if p >= 1:
        return 0.0
    i = torch.arange(k, n + 1, dtype=torch.float64)
    logpmf = (math.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
              + i * math.log(p) + (n - i) * math.log1p(-p))
    return float(torch.logsumexp(logpmf, dim=0))


def binomial_lower_bound(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound on p from k successes in n trials:
    the p with P(X >= k | p) = alpha (bisection; exact tail sums, no SciPy)."""
    if k == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    target = math.log(alpha)
    for _ in range(60):
        mid = (lo + hi) / 2
        if _log_binom_tail(k, n, mid) < target:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Certificate:
    """Per image: the smoothed prediction (-1: abstain) and its certified L2 radius."""

    prediction: torch.Tensor   # (N,) int64
    radius: torch.Tensor       # (N,) float64, 0 where abstaining
    p_lower: torch.Tensor      # (N,) float64


def _counts(model: Classifier, x: torch.Tensor, sigma: float, num: int, gen: torch.Generator, batch: int
            ) -> torch.Tensor:
    k = max(2, model.num_classes)
    counts = torch.zeros(k, dtype=torch.int64)
    done = 0
    while done < num:
        m = min(batch, num - done)
        noise = torch.randn((m, *x.shape), generator=gen).to(x)
        pred = logits_to_labels(model(x[None] + sigma * noise), model.task)
        counts += torch.bincount(pred.cpu(), minlength=k)
        done += m
    return counts


@torch.no_grad()
def certify(model: Classifier, x: torch.Tensor, ids: Sequence[int], sigma: float, *, n0: int = 100, n: int = 1000,
            alpha: float = 0.001, seed: int = 0, batch: int = 500) -> Certificate:
    """CERTIFY for every image of ``x`` (N, C, H, W)."""
    if model.task == MULTI_LABEL:
        raise ConfigError("randomized smoothing certifies single-label models (multi-class or binary)")
    if sigma <= 0 or n0 < 1 or n < 1 or not 0 < alpha < 1:
        raise ConfigError(f"certify needs sigma > 0, n0 >= 1, n >= 1, 0 < alpha < 1; got {sigma}, {n0}, {n}, {alpha}")
    model.eval()
    preds, radii, lows = [], [], []
    bar = progress(total=x.shape[0], desc=f"certify sigma={sigma:g}", unit="img")
    for img, image_id in zip(x, ids, strict=True):
        gen = torch.Generator().manual_seed((seed * 1_000_003 + int(image_id)) % (2**63 - 1))
        guess = int(_counts(model, img, sigma, n0, gen, batch).argmax())
        count = int(_counts(model, img, sigma, n, gen, batch)[guess])
        p_low = binomial_lower_bound(count, n, alpha)
        if p_low > 0.5:
            preds.append(guess)
            radii.append(sigma * float(torch.special.ndtri(torch.tensor(p_low, dtype=torch.float64))))
        else:
            preds.append(-1)
            radii.append(0.0)
        lows.append(p_low)
        bar.update(1)
    bar.close()
    return Certificate(torch.tensor(preds), torch.tensor(radii, dtype=torch.float64),
                       torch.tensor(lows, dtype=torch.float64))


def certified_accuracy(cert: Certificate, y: torch.Tensor, radii: Sequence[float]) -> dict[str, float]:
    """Fraction of images whose smoothed answer is right with a certified radius >= r, per r,
    plus the abstain rate."""
    right = cert.prediction == y.cpu()
    out = {f"{r:g}": float((right & (cert.radius >= r)).float().mean()) for r in radii}
    out["abstain"] = float((cert.prediction == -1).float().mean())
    return out
