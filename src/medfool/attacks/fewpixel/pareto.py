"""Multi-objective few-pixel attack: the Pareto front of confidence against pixels or visibility.

Su, Vargas & Sakurai (2019) note the trade-off between how many pixels change and how sure
the model stays; Korpihalkola et al. (FRUCT 2021) add how visible the colours are. Instead of one answer
this attack returns the whole front, found with NSGA-II (Deb et al. 2002) using DE variation:

* ``objectives="pixels"``: minimise (resistance, number of changed pixels). Each of the
  ``max_pixels`` genes carries an on/off switch; at least one pixel is always on.
* ``objectives="colour"``: ``max_pixels`` pixels, minimise (resistance, mean CIEDE2000 of the
  new colours against their neighbourhoods).

Resistance is the model's probability of the true class (or one minus the target's).
``AttackResult.x_adv`` holds, per image, the member that fools the model with the fewest pixels
(or the least visible colour), else the lowest-resistance member; ``extras["front"]``
holds every front member's objectives (NaN-padded) and ``extras["front_candidates"]`` their genes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import (
    Attack,
    Counter,
    check_choice,
    check_int,
    register_attack,
)
from medfool.attacks.fewpixel.evolution import EvolutionConfig, de_offspring, nsga2_select
from medfool.attacks.fewpixel.pixels import Conspicuity, candidate_logits, clip_candidates, write_pixels
from medfool.attacks.goal import Goal
from medfool.models.classifier import Classifier
from medfool.utils.rng import ImageStreams

__all__ = ["ParetoConfig", "ParetoPixels"]


@dataclass(frozen=True, kw_only=True)
class ParetoConfig(EvolutionConfig):
    max_pixels: int = 5
    objectives: str = "pixels"      # pixels | colour
    population: int = 100
    generations: int = 50
    crossover: float = 0.9

    def validate(self) -> None:
        super().validate()
        check_int("max_pixels", self.max_pixels, 1)
        check_choice("objectives", self.objectives, ("pixels", "colour"))


@register_attack
class ParetoPixels(Attack):
    name = "pixel-pareto"
    Config = ParetoConfig
    fixed_norm = "l0"
    paper = "Su, Vargas & Sakurai, IEEE TEVC 2019 (multi-objective); Deb et al. 2002 (NSGA-II)"
    config: ParetoConfig

    def budget(self) -> float | None:
        return float(self.config.max_pixels)

    def _split(self, x: torch.Tensor, owner: torch.Tensor,
               genes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Genes (m, K*(3+C)) of images ``owner`` -> the pixel candidates to write (m, K*(2+C)),
        switched-off pixels carrying the image's own colour, and per pixel (m, K) whether it is
        on and whether it changes the image."""
        k = self.config.max_pixels
        per = genes.view(genes.shape[0], k, -1)
        on = per[..., -1] >= 0.5
        if self.config.objectives == "colour":
            on = torch.ones_like(on)
        # at least one pixel stays on: the one with the largest switch value
        none = ~on.any(dim=1)
        on[none, per[none, :, -1].argmax(dim=1)] = True
        rows, cols = per[..., 0].floor().long(), per[..., 1].floor().long()
        original = x[owner.unsqueeze(1), :, rows, cols]                       # (m, k, C)
        colours = torch.where(on.unsqueeze(-1), per[..., 2:-1], original)     # off pixels keep their colour
        cand = torch.cat([per[..., :2], colours], dim=-1).view(genes.shape[0], -1)
        return cand, on, (colours != original).any(dim=-1) & on

    def _evaluate(self, model: Classifier, x: torch.Tensor, goal: Goal, visibility: Conspicuity,
                  owner: torch.Tensor, genes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectives (m, 2) and success (m,) of flat genes (m, D) for images ``owner``."""
        k = self.config.max_pixels
        cand, _, changed = self._split(x, owner, genes)
        obj = torch.empty(cand.shape[0], 2, device=x.device)
        logits = candidate_logits(model, x, owner, cand, k, self.config.eval_batch)
        obj[:, 0] = goal.resistance(logits, owner)
        won = goal.success(logits, owner)
        if self.config.objectives == "pixels":
            obj[:, 1] = changed.sum(dim=1).clamp_min(1).float()
        else:
            obj[:, 1] = visibility(owner, cand, k)
        return obj, won

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        cfg = self.config
        n, c, h, w = x.shape
        k, p = cfg.max_pixels, cfg.population
        dev = x.device
        visibility = Conspicuity(x)
        d = k * (3 + c)
        draw = rng.rows()  # every image stays to the end: one row per image throughout
        genes = draw.rand(n, p, k, 3 + c).cpu()
        genes[..., 0] *= h
        genes[..., 1] *= w
        genes[..., 2:2 + c] = (0.5 + 0.5 * draw.randn(n, p, k, c).cpu()).clamp(0, 1)
        pop = genes.view(n, p, d).to(dev)
        owner_p = torch.arange(n, device=dev).repeat_interleave(p)

        def clip(g: torch.Tensor) -> torch.Tensor:
            per = g.view(*g.shape[:-1], k, 3 + c)
            pix = clip_candidates(per[..., :-1].reshape(*g.shape[:-1], -1), k, h, w).view(*per.shape[:-1], 2 + c)
            return torch.cat([pix, per[..., -1:].clamp(0, 1)], dim=-1).view(g.shape)

        pop = clip(pop)
        obj, won = self._evaluate(model, x, goal, visibility, owner_p, pop.view(n * p, d))
        obj, won = obj.view(n, p, 2), won.view(n, p)
        counter.count(None, queries=p)
        for _ in range(cfg.generations):
            trial = clip(de_offspring(pop, obj[..., 0], draw, f=cfg.f, crossover=cfg.crossover))
            t_obj, t_won = self._evaluate(model, x, goal, visibility, owner_p, trial.view(n * p, d))
            counter.count(None, queries=p)
            both = torch.cat([pop, trial], dim=1)
            both_obj = torch.cat([obj, t_obj.view(n, p, 2)], dim=1)
            both_won = torch.cat([won, t_won.view(n, p)], dim=1)
            keep, _ = nsga2_select(both_obj, p)
            pop = both.gather(1, keep.unsqueeze(-1).expand(-1, -1, d))
            obj = both_obj.gather(1, keep.unsqueeze(-1).expand(-1, -1, 2))
            won = both_won.gather(1, keep)
        _, rank = nsga2_select(obj, p)
        front = rank == 0
        # the answer: the fooling member with the fewest pixels (or least visible colour), else
        # the member with the lowest resistance
        score = torch.where(won, obj[..., 1], 1e6 + obj[..., 0])
        pick = score.argmin(dim=1)
        best = pop[torch.arange(n, device=dev), pick]
        everyone = torch.arange(n, device=dev)
        cand, _, _ = self._split(x, everyone, best)
        counter.extras["front"] = torch.where(front.unsqueeze(-1), obj, torch.full_like(obj, float("nan")))
        counter.extras["front_candidates"] = pop
        return write_pixels(x, everyone, cand, k)
