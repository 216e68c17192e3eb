"""Jacobian-based Saliency Map Attack (L0), batched and memory-bounded.

Papernot, McDaniel, Jha, Fredrikson, Celik & Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016.

Each iteration sets a *pair* of input features (pixel channels) to the maximum (``theta=1``)
or minimum (``theta=-1``) value, choosing the pair that most raises the target logit while
lowering the others: alpha = d z_t / dx, beta = d (sum_{j != t} z_j) / dx, pair score
(alpha_p + alpha_q) * |beta_p + beta_q| subject to alpha > 0, beta < 0 (signs flipped for
theta = -1). The reference search is over all D^2 pairs, which at 64 x 64 x 3 is 151 million
pairs per image (tens of GiB for a batch). Here each image first keeps its ``candidates``
best single features, and pairs are searched among those: memory N * K^2, no loop over images.

Untargeted use picks, per image, the most likely wrong class as the target. Binary models
(one or two logits) are read through centred logits, so both kinds are attacked alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medfool.attacks.base import Attack, AttackConfig, Counter, check_int, check_range, register_attack
from medfool.attacks.goal import Goal, two_logits
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams
from medfool.vocab import BINARY, MULTI_CLASS

__all__ = ["JSMA", "JSMAConfig"]


@dataclass(frozen=True, kw_only=True)
class JSMAConfig(AttackConfig):
    theta: float = 1.0        # +1: set features to 1; -1: set them to 0
    gamma: float = 0.1        # largest fraction of features (pixel channels) to change
    candidates: int = 64      # features kept per image before the pairwise search

    def validate(self) -> None:
        if self.theta not in (-1.0, 1.0):
            raise ValueError(f"theta must be 1 or -1, got {self.theta}")
        check_range("gamma", self.gamma, 0.0, 1.0, lo_open=True)
        check_int("candidates", self.candidates, 2)


def _saliency_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits whose gradients the saliency map reads. A binary model's two logits are centred
    ([-d/2, d/2], the same decisions): as [0, z] (one logit) the other class's logit is a
    constant, beta is zero, and no pair passes the beta < 0 test."""
    z = two_logits(logits)
    return z - z.mean(dim=1, keepdim=True) if z.shape[1] == 2 else z


@register_attack
class JSMA(Attack):
    name = "jsma"
    Config = JSMAConfig
    fixed_norm = "l0"
    tasks = frozenset({MULTI_CLASS, BINARY})
    paper = "Papernot et al., IEEE EuroS&P 2016"
    config: JSMAConfig

    def budget(self) -> float | None:
        return None  # an L0 budget in features: checked through max_features()

    def max_features(self, shape: tuple[int, ...]) -> int:
        return 2 * math.ceil(self.config.gamma * math.prod(shape) / 2)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        cfg = self.config
        n = x.shape[0]
        d = x[0].numel()
        with torch.no_grad():
            z0 = _saliency_logits(model(x))
        # untargeted: aim at the most likely wrong class of each image
        most_likely_wrong = z0.scatter(1, goal.labels[:, None], float("-inf")).argmax(1)
        target = goal.target if goal.target is not None else most_likely_wrong
        budget = self.max_features(tuple(x.shape[1:]))
        x_adv = x.clone().flatten(1)                         # (n, D)
        goal_value = 1.0 if cfg.theta > 0 else 0.0
        # features still allowed: not yet changed and not already at the goal value
        domain = (x_adv != goal_value)
        act = torch.arange(n, device=x.device)
        changed = torch.zeros(n, dtype=torch.long, device=x.device)
        k = min(cfg.candidates, d)
        for _ in range(budget // 2):
            xa = x_adv[act].view(-1, *x.shape[1:]).requires_grad_(True)
            with torch.enable_grad():
                z = _saliency_logits(model(xa))
                t = target[act]
                zt = z.gather(1, t[:, None])[:, 0]
                (alpha,) = torch.autograd.grad(zt.sum(), xa, retain_graph=True)
                (total,) = torch.autograd.grad(z.sum(), xa)
            counter.count(act, gradients=2, queries=1)
            fooled = goal.success(z.detach(), act)  # targeted: reached the target; else: left the label
            keep = ~fooled & (changed[act] + 2 <= budget)
            act = act[keep]
            if act.numel() == 0:
                break
            alpha = alpha.flatten(1)[keep] * cfg.theta
            beta = (total.flatten(1)[keep] - alpha * cfg.theta) * cfg.theta
            dom = domain[act]
            # single-feature score picks the K candidates (excluded features get -inf)
            single = torch.where(dom & (alpha > 0), alpha - beta, torch.full_like(alpha, -math.inf))
            top = single.topk(k, dim=1).indices                             # (m, K)
            a, b = alpha.gather(1, top), beta.gather(1, top)
            ok = dom.gather(1, top)
            pa = a[:, :, None] + a[:, None, :]                              # (m, K, K)
            pb = b[:, :, None] + b[:, None, :]
            valid = (pa > 0) & (pb < 0) & ok[:, :, None] & ok[:, None, :]
            valid &= ~torch.eye(k, dtype=torch.bool, device=x.device)
            score = torch.where(valid, pa * pb.abs(), torch.full_like(pa, -math.inf)).flatten(1)
            best = score.argmax(1)
            stuck = ~torch.isfinite(score.gather(1, best[:, None])[:, 0])
            p, q = top.gather(1, (best // k)[:, None])[:, 0], top.gather(1, (best % k)[:, None])[:, 0]
            rows = act[~stuck]
            x_adv[rows, p[~stuck]] = goal_value
            x_adv[rows, q[~stuck]] = goal_value
            domain[rows, p[~stuck]] = False
            domain[rows, q[~stuck]] = False
            changed[rows] += 2
            act = act[~stuck]  # no admissible pair left: this image cannot be pushed further
            if act.numel() == 0:
                break
        return x_adv.view_as(x)
