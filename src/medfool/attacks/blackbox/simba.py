"""SimBA: Simple Black-box Attack, one basis direction at a time.

Guo, Gardner, You, Wilson & Weinberger, "Simple Black-box Adversarial Attacks", ICML 2019.
For each image, walk through a random ordering of an orthonormal basis; try a step of
-eps then +eps along the next direction and keep the first that lowers the model's
probability of the true class (raises the target's). Two bases: single pixels ("pixel") and
the 2D discrete cosine transform ("dct"), low frequencies first, which the paper found far
more query-efficient. Every image has its own ordering; one model call per half-step serves
all images still resisting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medfool.attacks.base import AttackConfig, check_choice, check_int, check_range, register_attack
from medfool.attacks.blackbox.base import BlackBoxAttack
from medfool.attacks.blackbox.oracle import QueryCounter
from medfool.attacks.goal import Goal
from medfool.utils.rng import Draw, ImageStreams

__all__ = ["SimBA", "SimBAConfig", "basis_order", "dct_matrix"]


@dataclass(frozen=True, kw_only=True)
class SimBAConfig(AttackConfig):
    eps: float = 0.2            # step length along a unit basis vector (L2)
    basis: str = "dct"          # dct | pixel
    queries: int = 1000         # per image, the clean query included
    freq_dims: int = 0          # dct: side of the low-frequency block tried first (0: H / 4)

    def validate(self) -> None:
        check_range("eps", self.eps, 0.0, 10.0, lo_open=True)
        check_choice("basis", self.basis, ("dct", "pixel"))
        check_int("queries", self.queries, 2)
        check_int("freq_dims", self.freq_dims, 0)


def dct_matrix(n: int) -> torch.Tensor:
    """(n, n) orthonormal DCT-II basis: row u is the u-th cosine over n samples."""
    i = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * n))
    m[0] *= 1 / math.sqrt(2)
    return (m * math.sqrt(2 / n)).float()


def basis_order(n: int, c: int, h: int, w: int, basis: str, freq_dims: int, draw: Draw) -> torch.Tensor:
    """(n, C*H*W) a random ordering of the basis per image; for the DCT, the low-frequency
    block comes first and then rings of growing frequency, each in random order."""
    d = c * h * w
    noise = draw.rand(n, d).cpu()
    if basis == "pixel":
        return noise.argsort(dim=1)
    u = torch.arange(h).view(1, h, 1).expand(c, h, w)
    v = torch.arange(w).view(1, 1, w).expand(c, h, w)
    ring = torch.maximum(u, v).flatten().float()
    fd = freq_dims or max(1, h // 4)
    ring = torch.where(ring < fd, torch.zeros_like(ring), ring)
    return (ring.view(1, d) + noise).argsort(dim=1)  # ring first, random within a ring


@register_attack
class SimBA(BlackBoxAttack):
    name = "simba"
    Config = SimBAConfig
    fixed_norm = "l2"
    paper = "Guo et al., ICML 2019"
    config: SimBAConfig

    def budget(self) -> float | None:
        return None  # unbounded in norm: the budget is the number of queries

    def _directions(self, pos: torch.Tensor, shape: tuple[int, int, int], tables: tuple[torch.Tensor, torch.Tensor]
                    ) -> torch.Tensor:
        """(k, C, H, W) unit basis vectors for flat basis positions ``pos`` (k,)."""
        c, h, w = shape
        k = pos.numel()
        ch, rest = pos // (h * w), pos % (h * w)
        out = torch.zeros(k, c, h, w, device=pos.device)
        if self.config.basis == "pixel":
            out.view(k, -1)[torch.arange(k, device=pos.device), pos] = 1.0
            return out
        ch_table, cw_table = tables
        u, v = rest // w, rest % w
        out[torch.arange(k, device=pos.device), ch] = ch_table[u][:, :, None] * cw_table[v][:, None, :]
        return out

    def search(self, oracle: QueryCounter, x: torch.Tensor, goal: Goal, clean: torch.Tensor,
               rng: ImageStreams) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        cfg = self.config
        order = basis_order(n, c, h, w, cfg.basis, cfg.freq_dims, rng.rows()).to(x.device)
        tables = (dct_matrix(h).to(x.device), dct_matrix(w).to(x.device))
        best, scores = x.clone(), clean.clone()
        prob = goal.resistance(clean)
        fooled = goal.success(clean)
        everyone = torch.arange(n, device=x.device)
        for t in range(c * h * w):
            active = everyone[~fooled & (oracle.remaining() > 0)]
            if active.numel() == 0:
                break
            q = self._directions(order[active, t], (c, h, w), tables)
            for sign in (-1.0, 1.0):  # the second half-step only where the first did not help
                if active.numel() == 0:
                    break
                cand = (best[active] + sign * cfg.eps * q).clamp(0, 1)
                out = oracle.query(cand, active)
                p_new = goal.resistance(out, active)
                keep = p_new < prob[active]
                upd = active[keep]
                best[upd], scores[upd], prob[upd] = cand[keep], out[keep], p_new[keep]
                fooled[upd] = goal.success(out[keep], upd)
                rest = ~keep & (oracle.remaining(active) > 0)
                active, q = active[rest], q[rest]
        return best, scores
