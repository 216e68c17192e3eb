"""Boundary attack: a random walk along the decision boundary towards the original image.

Brendel, Rauber & Bethge, "Decision-Based Adversarial Attacks: Reliable Attacks Against
Black-Box Machine Learning Models", ICLR 2018. From an adversarial start, each step draws a
Gaussian direction, keeps its part orthogonal to the line to the original, moves on the
sphere around the original by ``spherical_step`` of the current distance, then a fraction
``source_step`` towards it; the candidate is kept if the model still reads it wrongly. Step
sizes adapt to each image's recent acceptance rate (grow above 50 %, shrink below 20 %, as
in the paper). One candidate per image per query; all images move in lockstep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import AttackConfig, check_int, check_range, register_attack
from medfool.attacks.blackbox.base import BlackBoxAttack
from medfool.attacks.blackbox.decision import near_boundary_start
from medfool.attacks.blackbox.oracle import QueryCounter
from medfool.attacks.goal import Goal


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

    def search(self, oracle: QueryCounter, x: torch.Tensor, goal: Goal, clean: torch.Tensor,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        best, scores = x.clone(), clean.clone()
        todo, cur, cur_scores = near_boundary_start(oracle, goal, x, clean, cfg.init_tries, gen)
        if todo.numel() == 0:
            return best, scores
        k = todo.numel()
        sph = torch.full((k,), cfg.spherical_step, device=x.device)
        src = torch.full((k,), cfg.source_step, device=x.device)
        wins = torch.zeros(k, device=x.device)
        tries = torch.zeros(k, device=x.device)
        xo = x[todo]
        while True:
            live = (oracle.remaining(todo) > 0).nonzero().flatten()
            if live.numel() == 0:
                break
            diff = xo[live] - cur[live]                                   # towards the original
            dist = diff.flatten(1).norm(dim=1).clamp_min(1e-12)
            unit = diff / dist.view(-1, 1, 1, 1)
            eta = torch.randn(live.numel(), *x.shape[1:], generator=gen).to(x.device)
            eta = eta - (eta * unit).flatten(1).sum(1).view(-1, 1, 1, 1) * unit   # orthogonal part
            eta = eta / eta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            cand = cur[live] + (sph[live] * dist).view(-1, 1, 1, 1) * eta
            # back onto the sphere of radius dist around the original, then towards it
            back = xo[live] - cand
            cand = xo[live] - back * (dist / back.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, 1, 1, 1)
            cand = (cand + src[live].view(-1, 1, 1, 1) * (xo[live] - cand)).clamp(0, 1)
            out = oracle.query(cand, todo[live])
            won = goal.success(out, todo[live])
            hit = live[won]
            cur[hit], cur_scores[hit] = cand[won], out[won]
            wins[live] += won.float()
            tries[live] += 1
            due = live[tries[live] >= cfg.adapt_every]
            if due.numel():
                rate = wins[due] / tries[due]
                factor = torch.where(rate > 0.5, torch.full_like(rate, 1.5),
                                     torch.where(rate < 0.2, torch.full_like(rate, 1 / 1.5), torch.ones_like(rate)))
                sph[due] = (sph[due] * factor).clamp(1e-6, 1.0)
                src[due] = (src[due] * factor).clamp(1e-6, 1.0)
                wins[due], tries[due] = 0, 0
        best[todo], scores[todo] = cur, cur_scores
        return best, scores
