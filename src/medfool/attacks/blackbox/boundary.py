"""Boundary attack: a random walk along the decision boundary towards the original image.

Brendel, Rauber & Bethge, "Decision-Based Adversarial Attacks: Reliable Attacks Against
Black-Box Machine Learning Models", ICLR 2018. From an adversarial start, each step draws a
Gaussian direction, keeps its part orthogonal to the line to the original, moves on the
sphere around the original by ``spherical_step`` of the current distance, then a fraction
``source_step`` towards it; the candidate is kept if the model still reads it wrongly. As in
the paper, the point on the sphere is queried too (two queries per step): its success rate
tunes the spherical step and the full candidate's tunes the source step (each grows above
50 % and shrinks below 20 %). Tuning both on the full candidate alone collapses them both at
the boundary and the walk stalls. All images move in lockstep, both points in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import AttackConfig, check_int, check_range, register_attack
from medfool.attacks.blackbox.base import BlackBoxAttack
from medfool.attacks.blackbox.decision import near_boundary_start
from medfool.attacks.blackbox.oracle import QueryCounter
from medfool.attacks.goal import Goal
from medfool.utils.rng import ImageStreams

__all__ = ["Boundary", "BoundaryConfig"]


@dataclass(frozen=True, kw_only=True)
class BoundaryConfig(AttackConfig):
    queries: int = 5000         # per image, the clean query included
    spherical_step: float = 0.01
    source_step: float = 0.01
    adapt_every: int = 10       # steps between step-size adaptations
    init_tries: int = 100

    def validate(self) -> None:
        check_int("queries", self.queries, 2)
        check_range("spherical_step", self.spherical_step, 0.0, 1.0, lo_open=True)
        check_range("source_step", self.source_step, 0.0, 1.0, lo_open=True)
        check_int("adapt_every", self.adapt_every, 1)
        check_int("init_tries", self.init_tries, 1)


@register_attack
class Boundary(BlackBoxAttack):
    name = "boundary"
    Config = BoundaryConfig
    needs = "labels"
    fixed_norm = "l2"
    paper = "Brendel, Rauber & Bethge, ICLR 2018"
    config: BoundaryConfig

    def budget(self) -> float | None:
        return None  # minimal-perturbation: the budget is the number of queries

    @staticmethod
    def _factor(rate: torch.Tensor) -> torch.Tensor:
        """Grow a step above 50 % success, shrink it below 20 % (the paper's rule)."""
        return torch.where(rate > 0.5, torch.full_like(rate, 1.5),
                           torch.where(rate < 0.2, torch.full_like(rate, 1 / 1.5), torch.ones_like(rate)))

    def search(self, oracle: QueryCounter, x: torch.Tensor, goal: Goal, clean: torch.Tensor,
               rng: ImageStreams) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        best, scores = x.clone(), clean.clone()
        todo, cur, cur_scores = near_boundary_start(oracle, goal, x, clean, cfg.init_tries, rng)
        if todo.numel() == 0:
            return best, scores
        k = todo.numel()
        sph = torch.full((k,), cfg.spherical_step, device=x.device)
        src = torch.full((k,), cfg.source_step, device=x.device)
        sph_wins, src_wins, sph_tries, src_tries = (torch.zeros(k, device=x.device) for _ in range(4))
        xo = x[todo]
        while True:
            live = (oracle.remaining(todo) >= 2).nonzero().flatten()
            if live.numel() == 0:
                break
            diff = xo[live] - cur[live]                                   # towards the original
            dist = diff.flatten(1).norm(dim=1).clamp_min(1e-12)
            unit = diff / dist.view(-1, 1, 1, 1)
            eta = rng.rows(todo[live]).randn(live.numel(), *x.shape[1:], bulk=True)
            eta = eta - (eta * unit).flatten(1).sum(1).view(-1, 1, 1, 1) * unit   # orthogonal part
            eta = eta / eta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            sphere = cur[live] + (sph[live] * dist).view(-1, 1, 1, 1) * eta
            # back onto the sphere of radius dist around the original, then towards it
            back = xo[live] - sphere
            sphere = xo[live] - back * (dist / back.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
            cand = (sphere + src[live].view(-1, 1, 1, 1) * (xo[live] - sphere)).clamp(0, 1)
            # both points in one call: the spherical one tunes the spherical step, the full one the source step
            out = oracle.query(torch.cat([sphere.clamp(0, 1), cand]), todo[live].repeat(2))
            n_live = live.numel()
            on_sphere = goal.success(out[:n_live], todo[live])
            won = goal.success(out[n_live:], todo[live])
            hit = live[won]
            cur[hit], cur_scores[hit] = cand[won], out[n_live:][won]
            sph_wins[live] += on_sphere.float()
            sph_tries[live] += 1
            src_wins[live] += (won & on_sphere).float()
            src_tries[live] += on_sphere.float()
            due = live[sph_tries[live] >= cfg.adapt_every]
            if due.numel():
                sph[due] = (sph[due] * self._factor(sph_wins[due] / sph_tries[due])).clamp(1e-6, 1.0)
                rate = src_wins[due] / src_tries[due].clamp_min(1)
                src[due] = (src[due] * self._factor(rate)).clamp(1e-6, 1.0)
                sph_wins[due], sph_tries[due], src_wins[due], src_tries[due] = 0, 0, 0, 0
        best[todo], scores[todo] = cur, cur_scores
        return best, scores
