"""HopSkipJump: decision-based attack from the model's labels alone.

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020. From an adversarial starting point, repeat: binary-search to the decision
boundary; estimate the boundary's normal from the signs of ``n_t = init_evals * sqrt(t)``
random probes around that point (baseline-corrected Monte Carlo); step along it with a
geometrically shrinking step until the point is adversarial again. Constants follow the
authors' code (theta = d^-1.5 for L2, d^-2 for Linf; probe radius sqrt(d) * theta * dist).
All images move in lockstep; each one's probes are capped by its remaining query budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medfool.attacks.base import AttackConfig, check_choice, check_int, register_attack
from medfool.attacks.blackbox.base import BlackBoxAttack
from medfool.attacks.blackbox.decision import binary_search, near_boundary_start
from medfool.attacks.blackbox.oracle import QueryCounter, chunk_for
from medfool.attacks.goal import Goal
from medfool.utils.rng import ImageStreams
from medfool.vocab import Norm

__all__ = ["HSJConfig", "HopSkipJump"]


@dataclass(frozen=True, kw_only=True)
class HSJConfig(AttackConfig):
    norm: Norm = "l2"
    queries: int = 5000        # per image, the clean query included
    init_evals: int = 100      # probes for the first gradient estimate
    max_evals: int = 10000     # probes per estimate at most
    init_tries: int = 100      # random images tried for the starting point
    step_halvings: int = 25    # geometric step search: at most this many halvings

    def validate(self) -> None:
        check_choice("norm", self.norm, ("l2", "linf"))
        check_int("queries", self.queries, 2)
        check_int("init_evals", self.init_evals, 1)
        check_int("max_evals", self.max_evals, 1)
        check_int("init_tries", self.init_tries, 1)
        check_int("step_halvings", self.step_halvings, 1)


def _dist(a: torch.Tensor, b: torch.Tensor, norm: Norm) -> torch.Tensor:
    d = (a - b).flatten(1)
    return d.norm(dim=1) if norm == "l2" else d.abs().amax(dim=1)


@register_attack
class HopSkipJump(BlackBoxAttack):
    name = "hsj"
    Config = HSJConfig
    needs = "labels"
    paper = "Chen, Jordan & Wainwright, IEEE S&P 2020"
    config: HSJConfig

    def budget(self) -> float | None:
        return None  # minimal-perturbation: the budget is the number of queries

    def _gradient(self, oracle: QueryCounter, goal: Goal, idx: torch.Tensor, cur: torch.Tensor,
                  delta: torch.Tensor, n_evals: torch.Tensor, rng: ImageStreams) -> torch.Tensor:
        """Estimated boundary normal (k, C, H, W), unit L2 (or sign, for Linf); image j uses
        ``n_evals[j]`` probes."""
        k, shape = idx.numel(), cur.shape[1:]
        m = int(n_evals.max())
        valid = torch.arange(m, device=cur.device).view(1, m) < n_evals.view(k, 1)           # (k, m)
        # each image's probes from its own stream, probe j from sub-stream j: the same whatever m is
        draw = rng.rows(idx, copies=m)
        noise = (draw.randn(k * m, *shape, bulk=True) if self.config.norm == "l2"
                 else draw.rand(k * m, *shape, bulk=True) * 2 - 1).view(k, m, *shape)
        noise = noise / noise.flatten(2).norm(dim=2).clamp_min(1e-12).view(k, m, 1, 1, 1)
        d = delta.view(k, 1, 1, 1, 1)
        probes = (cur[:, None] + d * noise).clamp(0, 1)
        noise = (probes - cur[:, None]) / d                                                    # after clipping
        owner = idx.view(k, 1).expand(k, m)
        flat_probes, flat_owner = probes[valid], owner[valid]
        sign = torch.zeros(k, m, device=cur.device)
        chunk = chunk_for(tuple(shape))
        outs = []
        for s in range(0, flat_probes.shape[0], chunk):
            outs.append(goal.success(oracle.query(flat_probes[s:s + chunk], flat_owner[s:s + chunk]),
                                     flat_owner[s:s + chunk]).float() * 2 - 1)
        sign[valid] = torch.cat(outs) if outs else sign[valid]
        count = valid.sum(1).clamp_min(1).float()
        mean = sign.sum(1) / count
        # baseline-corrected weights; all-same signs give the mean direction (the authors' code)
        centred = torch.where(valid, sign - mean.view(k, 1), torch.zeros_like(sign))
        flat = (mean.abs() == 1).view(k, 1)
        weights = torch.where(flat, sign, centred) * valid
        grad = (weights.view(k, m, 1, 1, 1) * noise).sum(1) / count.view(k, 1, 1, 1)
        out: torch.Tensor = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(k, 1, 1, 1) \
            if self.config.norm == "l2" else grad.sign()
        return out

    def search(self, oracle: QueryCounter, x: torch.Tensor, goal: Goal, clean: torch.Tensor,
               rng: ImageStreams) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        d = x[0].numel()
        theta = 1.0 / (d * math.sqrt(d)) if cfg.norm == "l2" else 1.0 / d ** 2
        best, scores = x.clone(), clean.clone()
        todo, cur, cur_scores = near_boundary_start(oracle, goal, x, clean, cfg.init_tries, rng)
        if todo.numel() == 0:
            return best, scores
        best[todo], scores[todo] = cur, cur_scores
        t = 0
        while True:
            live = oracle.remaining(todo) > 0
            if not bool(live.any()):
                break
            idx, cur, cur_scores = todo[live], cur[live], cur_scores[live]
            todo = idx
            xi = x[idx]
            dist = _dist(cur, xi, cfg.norm)
            delta = torch.full_like(dist, 0.1) if t == 0 else (
                math.sqrt(d) * theta * dist if cfg.norm == "l2" else d * theta * dist)
            cur, cur_scores = binary_search(oracle, goal, idx, xi, cur, cur_scores, theta, cfg.norm)
            self._keep_best(best, scores, x, idx, cur, cur_scores)
            # leave a little budget for the step search; spend the rest of this round on probes
            want = min(int(cfg.init_evals * math.sqrt(t + 1)), cfg.max_evals)
            n_evals = torch.clamp(oracle.remaining(idx) - 3, min=0, max=want)
            if not bool((n_evals > 0).any()):
                break
            g = max(1, (1 << 25) // (int(n_evals.max()) * d))  # images per estimate: bounded probe memory
            grad = torch.cat([self._gradient(oracle, goal, idx[s:s + g], cur[s:s + g], delta[s:s + g],
                                             n_evals[s:s + g], rng) for s in range(0, idx.numel(), g)])
            dist = _dist(cur, xi, cfg.norm)
            eps = 2 * dist / math.sqrt(t + 1)
            moved = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
            for _ in range(cfg.step_halvings):
                sel = (~moved & (oracle.remaining(idx) > 0)).nonzero().flatten()
                if sel.numel() == 0:
                    break
                eps[sel] = eps[sel] / 2
                cand = (cur[sel] + eps[sel].view(-1, 1, 1, 1) * grad[sel]).clamp(0, 1)
                out = oracle.query(cand, idx[sel])
                won = goal.success(out, idx[sel])
                hit = sel[won]
                cur[hit], cur_scores[hit] = cand[won], out[won]
                moved[hit] = True
            self._keep_best(best, scores, x, idx, cur, cur_scores)
            t += 1
        return best, scores

    def _keep_best(self, best: torch.Tensor, scores: torch.Tensor, x: torch.Tensor, idx: torch.Tensor,
                   cur: torch.Tensor, cur_scores: torch.Tensor) -> None:
        """Keep each image's closest adversarial point so far (all of them were queried)."""
        closer = _dist(cur, x[idx], self.config.norm) < _dist(best[idx], x[idx], self.config.norm)
        first = (best[idx] == x[idx]).flatten(1).all(1)
        take = closer | first
        best[idx[take]], scores[idx[take]] = cur[take], cur_scores[take]
