"""Adversarial-image detectors in front of the model: a flagged input is a result.

Every detector gives a score per image (higher: more likely adversarial), differentiable in the
pixels so that an adaptive attacker can descend it, and a threshold set on clean validation
images at a stated false-positive rate (5 % by default). Detectors read the model's deep
features (the input of its last linear layer) and, for LID, its intermediate activations.

* ``mahalanobis``: Lee, Lee, Lee & Shin, NeurIPS 2018: the smallest Mahalanobis distance of the
  penultimate features to a class mean, with one shared covariance (no input pre-processing,
  one layer).
* ``kd-bu``: Feinman, Curtin, Shintre & Gardner, 2017: kernel density of the features among
  training images of the predicted class, plus Bayesian uncertainty (variance of Monte-Carlo
  dropout predictions; zero for networks without dropout), combined by logistic regression.
* ``lid``: Ma, Li, Wang, Erfani, Wijewickrema, Schoenebeck, Song, Houle & Bailey, ICLR 2018:
  local intrinsic dimensionality of each tapped layer's activations among a fixed reference
  set of clean training images (not the mini-batch, so an image's score never depends on
  its neighbours), combined by logistic regression.
* ``binary``: Ma, Niu, Gu, Wang, Zhao, Bailey & Lu, Pattern Recognition 110, 2021: a small
  classifier on deep features trained to tell clean from PGD images ("a simple adversarial
  image detector classifier is sufficient to protect the actual classifier from most of the
  attacks").
* ``squeeze``: Xu, Evans & Qi, NDSS 2018: the largest L1 distance between the model's
  probabilities on the image and on squeezed copies (4-bit depth, 3x3 median filter); needs no
  training. The squeezers pass gradients straight through for the adaptive attacker.

Training detectors (KD-BU, LID, binary) see PGD images crafted on training images, and Gaussian
noisy copies as extra negatives, as their papers do. LID's reference set and KD's kernel bank
are training images kept apart from those the logistic regression is fitted on (as Feinman et
al. fit theirs on test-set images against a training-set bank): scored among references that
include itself, an image would look cleaner than any image the fitted detector sees later.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medfool.defences.robust_training import pgd_linf
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier, logits_to_labels, logits_to_probs
from medfool.models.features import FeatureTap
from medfool.models.preprocess import BitDepth, Median
from medfool.vocab import MULTI_LABEL

__all__ = ["DETECTORS", "Detector", "FeatureTap", "fit_detector", "tpr_at_fpr"]

DETECTORS = ("mahalanobis", "kd-bu", "lid", "binary", "squeeze")


def _logistic(features: torch.Tensor, positive: torch.Tensor, steps: int = 200) -> nn.Linear:
    """Logistic regression on standardised features (L-BFGS, light L2)."""
    mu, sd = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mu) / sd
    lin = nn.Linear(z.shape[1], 1).double()
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")
    target = positive.double()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(lin(z.double())[:, 0], target) + 1e-3 * lin.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    out = nn.Linear(z.shape[1], 1)
    with torch.no_grad():  # fold the standardisation into the layer
        w = lin.weight.float() / sd
        out.weight.copy_(w)
        out.bias.copy_(lin.bias.float() - (w * mu).sum())
    return out


class Detector(nn.Module):
    """A fitted detector: ``score(x)`` (N,), ``flag(x)`` (N,) bool at the threshold."""

    threshold: torch.Tensor

    def __init__(self, kind: str, model: Classifier) -> None:
        super().__init__()
        if kind not in DETECTORS:
            raise ConfigError(f"detector must be one of {', '.join(DETECTORS)}, got {kind!r}")
        self.kind = kind
        self.model = model
        self.tap = FeatureTap(model)
        self.register_buffer("threshold", torch.tensor(math.inf))
        self.fpr = math.nan
        self.clean_spread = 1.0  # std of clean scores: the adaptive attacker's unit
        self.bpda = False        # squeezers pass gradients straight through (the adaptive attacker)
        self._score: Callable[[torch.Tensor], torch.Tensor] = lambda x: torch.zeros(x.shape[0])
        self.head: nn.Module | None = None

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self._score(x)

    @torch.no_grad()
    def scores(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        return torch.cat([self.score(x[i:i + batch]) for i in range(0, x.shape[0], batch)]) if len(x) else \
            torch.zeros(0)

    def flag(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) > self.threshold

    def calibrate(self, clean_scores: torch.Tensor, fpr: float = 0.05) -> None:
        """Threshold = the (1 - fpr) quantile of clean scores: ``fpr`` of clean images are flagged."""
        self.threshold = torch.quantile(clean_scores.double(), 1 - fpr).float()
        self.fpr = fpr
        self.clean_spread = float(clean_scores.std().clamp_min(1e-6))


def tpr_at_fpr(clean: torch.Tensor, adv: torch.Tensor, fpr: float = 0.05) -> float:
    """True-positive rate on ``adv`` at the threshold flagging ``fpr`` of ``clean``."""
    if adv.numel() == 0:
        return math.nan
    thr = torch.quantile(clean.double(), 1 - fpr)
    return float((adv.double() > thr).float().mean())


# -- fitting ---------------------------------------------------------------------------------
def with_logistic_head(det: Detector, statistics: Callable[[torch.Tensor], torch.Tensor],
                       negatives: tuple[torch.Tensor, ...], positives: torch.Tensor, batch: int
                       ) -> Callable[[torch.Tensor], torch.Tensor]:
    """KD-BU and LID: per-image statistics combined by a logistic regression fitted on clean and
    noisy (negative) and adversarial (positive) training images; returns the score function."""
    parts = (*negatives, positives)
    with torch.no_grad():
        vec = torch.cat([statistics(v[i:i + batch]) for v in parts for i in range(0, v.shape[0], batch)])
    labels = torch.cat([torch.zeros(sum(v.shape[0] for v in negatives)), torch.ones(positives.shape[0])])
    head = det.head = _logistic(vec, labels)

    def score(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = head(statistics(x))[:, 0]
        return out

    return score


def _lid(acts: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    """Maximum-likelihood LID of each row of ``acts`` among ``ref`` (Amsaleg et al. 2015). Distances
    in float64 (float32's matrix-product distances round close neighbours to 0); a row identical to
    a reference is not its own neighbour (row by row, whatever else is in the batch)."""
    d = torch.cdist(acts.double(), ref.double())
    d = d.masked_fill(d <= 0, math.inf)
    knn = d.topk(k, dim=1, largest=False).values.clamp_min(1e-12)
    return (-1.0 / (torch.log(knn / knn[:, -1:]).mean(dim=1) - 1e-12)).float()


def _features(det: Detector, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deep features (N, D) and logits of ``x``, in chunks, without gradients."""
    feats, logits = [], []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            f, _, z = det.tap(x[i:i + batch])
            feats.append(f)
            logits.append(z)
    return torch.cat(feats), torch.cat(logits)


def _split_reference(n: int, n_ref: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint (reference, fitting) indices of ``n`` training images: ``n_ref`` random ones for
    the reference set (LID) or kernel bank (KD), the rest to fit the detector on. Scored among
    references that include itself, an image would look cleaner than any image scored later."""
    if n < 4:
        raise ConfigError(f"fitting this detector needs at least 4 training images, got {n}")
    order = torch.randperm(n, generator=gen)
    return order[:n_ref].sort().values, order[n_ref:].sort().values


def _fit_squeeze(det: Detector) -> None:
    model, task = det.model, det.model.task
    squeezers = [BitDepth(bits=4), Median(size=3)]

    def squeeze_score(x: torch.Tensor) -> torch.Tensor:
        p = logits_to_probs(model(x), task)
        out = []
        for s in squeezers:
            s.bpda = det.bpda
            out.append((p - logits_to_probs(model(s(x)), task)).abs().sum(dim=1))
        return torch.stack(out).max(dim=0).values

    det._score = squeeze_score


def _fit_mahalanobis(det: Detector, x_train: torch.Tensor, y_train: torch.Tensor, batch: int) -> None:
    model, task = det.model, det.model.task
    feats, _ = _features(det, x_train, batch)
    groups = [y_train == c for c in range(model.num_classes)] if task != MULTI_LABEL else \
        [torch.ones_like(y_train[:, 0], dtype=torch.bool)]
    groups = [g for g in groups if bool(g.any())]
    means = torch.stack([feats[g].mean(0) for g in groups])
    centred = torch.cat([feats[g] - feats[g].mean(0) for g in groups])
    cov = centred.T @ centred / centred.shape[0] + 1e-4 * torch.eye(feats.shape[1])
    precision = torch.linalg.inv(cov)

    def maha(x: torch.Tensor) -> torch.Tensor:
        f, _, _ = det.tap(x)
        diff = f[:, None, :] - means[None]                                        # (N, C, D)
        dist = torch.einsum("ncd,de,nce->nc", diff, precision, diff)
        return dist.min(dim=1).values

    det._score = maha


def _training_examples(det: Detector, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator,
                       batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The learning detectors' examples from clean training images ``x``: Gaussian-noisy copies
    (extra negatives) and the PGD-10 images at ``eps`` that fool the model on images it classified
    correctly (positives)."""
    model, task = det.model, det.model.task
    x_adv = torch.cat([pgd_linf(model, x[i:i + batch], y[i:i + batch], eps, 10, generator=gen)
                       for i in range(0, x.shape[0], batch)]).detach()
    noise = (x + (eps * torch.randn(x.shape, generator=gen)).to(x)).clamp(0, 1)
    with torch.no_grad():
        right = logits_to_labels(model(x), task)
        right = (right == y).all(1) if task == MULTI_LABEL else right == y
        fooled = logits_to_labels(model(x_adv), task)
        fooled = (fooled != y).any(1) if task == MULTI_LABEL else fooled != y
    keep = right & fooled
    if int(keep.sum()) < 10:
        raise ConfigError(f"PGD at {eps * 255:g}/255 fooled only {int(keep.sum())} of {x.shape[0]} training images; "
                          "a detector cannot be trained on so few (raise --eps)")
    return noise, x_adv[keep]


def _fit_binary(det: Detector, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator,
                batch: int) -> None:
    noise, positives = _training_examples(det, x, y, eps, gen, batch)
    feats, _ = _features(det, torch.cat([x, noise, positives]), batch)
    labels = torch.cat([torch.zeros(2 * x.shape[0]), torch.ones(positives.shape[0])])
    head = nn.Sequential(nn.Linear(feats.shape[1], 64), nn.ReLU(), nn.Linear(64, 1))
    mu, sd = feats.mean(0), feats.std(0).clamp_min(1e-6)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
    pos_weight = (labels == 0).sum() / labels.sum().clamp_min(1)
    for _epoch in range(60):
        perm = torch.randperm(labels.shape[0], generator=gen)
        for i in range(0, perm.shape[0], 256):
            j = perm[i:i + 256]
            loss = F.binary_cross_entropy_with_logits(head((feats[j] - mu) / sd)[:, 0], labels[j],
                                                      pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    det.head = head.eval()

    def binary(x: torch.Tensor) -> torch.Tensor:
        f, _, _ = det.tap(x)
        out: torch.Tensor = head((f - mu) / sd)[:, 0]
        return out

    det._score = binary


def _fit_lid(det: Detector, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator, batch: int) -> None:
    """Reference set: up to 200 training images (at most half of them); the logistic regression is
    fitted on the others, their noisy copies and their PGD images."""
    ref, fit = _split_reference(x.shape[0], min(200, x.shape[0] // 2), gen)
    k = min(20, ref.numel() - 1)
    with torch.no_grad():
        _, layers, z = det.tap(x[ref])
    refs = [*layers, z]

    def lid_vector(x: torch.Tensor) -> torch.Tensor:
        _, acts, logits = det.tap(x)
        return torch.stack([_lid(a, r, k) for a, r in zip([*acts, logits], refs, strict=True)], dim=1)

    noise, positives = _training_examples(det, x[fit], y[fit], eps, gen, batch)
    det._score = with_logistic_head(det, lid_vector, (x[fit], noise), positives, batch)


def _fit_kd_bu(det: Detector, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator,
               batch: int) -> None:
    """Kernel bank: half of the training images (up to 500 per predicted class); the logistic
    regression is fitted on the other half, its noisy copies and its PGD images."""
    model, task = det.model, det.model.task
    half, fit = _split_reference(x.shape[0], x.shape[0] // 2, gen)
    feats, logits = _features(det, x[half], batch)
    pred = logits_to_labels(logits, task) if task != MULTI_LABEL else torch.zeros(half.numel(), dtype=torch.long)
    classes = model.num_classes if task != MULTI_LABEL else 1
    chosen = torch.cat([torch.nonzero(pred == c).flatten()[torch.randperm(int((pred == c).sum()), generator=gen)[:500]]
                        for c in range(classes)])
    bank, bank_cls = feats[chosen], pred[chosen]
    counts = torch.bincount(bank_cls, minlength=classes).clamp_min(1).float()
    bandwidth = float(torch.pdist(bank[:200]).median().clamp_min(1e-6))  # pairs of distinct images
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]

    def kd_bu(x: torch.Tensor) -> torch.Tensor:
        f, _, z = det.tap(x)
        cls = logits_to_labels(z, task) if task != MULTI_LABEL else torch.zeros(x.shape[0], dtype=torch.long)
        logk = -torch.cdist(f, bank).square() / bandwidth**2                     # (N, bank)
        logk = logk.masked_fill(bank_cls[None, :] != cls[:, None], float("-inf"))
        kd = torch.logsumexp(logk, dim=1) - counts[cls].log()
        return torch.stack([kd, _dropout_variance(model, x, dropouts) if dropouts else torch.zeros_like(kd)], dim=1)

    noise, positives = _training_examples(det, x[fit], y[fit], eps, gen, batch)
    det._score = with_logistic_head(det, kd_bu, (x[fit], noise), positives, batch)


def _dropout_variance(model: Classifier, x: torch.Tensor, dropouts: Sequence[nn.Module]) -> torch.Tensor:
    """Bayesian uncertainty: the variance of 8 Monte-Carlo dropout predictions, summed over outputs."""
    for m in dropouts:
        m.train()
    try:
        draws = torch.stack([logits_to_probs(model(x), model.task) for _ in range(8)])
    finally:
        for m in dropouts:
            m.eval()
    return draws.var(dim=0).sum(dim=1)


def fit_detector(kind: str, model: Classifier, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_val: torch.Tensor, *, eps: float = 8 / 255, seed: int = 0, fpr: float = 0.05,
                 batch: int = 256) -> Detector:
    """Fit a detector on training images (and PGD images crafted from them at ``eps``), then set
    its threshold on the clean ``x_val`` at ``fpr``."""
    model.eval()
    det = Detector(kind, model)
    gen = torch.Generator().manual_seed(seed)
    if kind == "squeeze":
        _fit_squeeze(det)
    elif kind == "mahalanobis":
        _fit_mahalanobis(det, x_train, y_train, batch)
    else:
        learn = {"binary": _fit_binary, "lid": _fit_lid, "kd-bu": _fit_kd_bu}[kind]
        learn(det, x_train, y_train, eps, gen, batch)
    det.calibrate(det.scores(x_val), fpr)
    return det
