"""One-pixel and few-pixel attacks by differential evolution.

Su, Vargas & Sakurai, "One Pixel Attack for Fooling Deep Neural Networks", IEEE TEVC 23(5),
2019. A candidate is k pixels (location and colour); a population of candidates evolves by
DE/rand/1 (F = 0.5, no crossover) to minimise the model's probability of the true class (or
maximise the target's), and an image stops as soon as one candidate fools the model.

Batched: every generation builds the trial candidates of *all* active images with tensor
operations and evaluates them in as few model calls as memory allows (``eval_batch``
candidates per call); there is no Python loop over images, candidates or pixels.

What spends fewer model evaluations than the textbook run, both optional:
* ``init="prior"``: one gradient per image ranks every location by the first-order gain of
  setting it to the best corner of the colour cube; a quarter of the initial population starts at
  the top-ranked locations with those colours (Kügler et al. and Vargas & Su found vulnerable
  pixels concentrated, not uniform). ``init="uniform"`` is Su et al.'s (black-box) start.
* per-image early stopping (as the reference implementations), and dropping finished images
  from the batch so later generations cost only what is left.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import (
    Attack,
    Counter,
    check_choice,
    check_int,
    check_range,
    register_attack,
)
from medfool.attacks.fewpixel.evolution import EvolutionConfig, de_offspring
from medfool.attacks.fewpixel.pixels import (
    Conspicuity,
    candidate_logits,
    candidate_size,
    clip_candidates,
    write_pixels,
)
from medfool.attacks.goal import Goal
from medfool.attacks.passes import Passes
from medfool.models.classifier import Classifier
from medfool.utils.rng import Draw, ImageStreams
from medfool.vocab import Task

__all__ = ["OnePixel", "OnePixelConfig"]


@dataclass(frozen=True, kw_only=True)
class OnePixelConfig(EvolutionConfig):
    pixels: int = 1                 # k: how many pixels may change (Su et al.'s population 400, 100 generations,
    strategy: str = "rand1"         # F 0.5, no crossover are the defaults); rand1 (Su et al.) | best1
    init: str = "prior"             # prior (one gradient per image) | uniform (black-box)
    prior_share: float = 0.25       # fraction of the initial population started from the prior
    stop_below: float = 1.0         # stop an image once fooled and its resistance <= this (1: at once)
    check_every: int = 100          # population members evaluated between success checks
    objective: str = "confidence"   # confidence (Su et al.) | inconspicuous (then the least visible colour)
    patience: int = 10              # inconspicuous: generations without a less visible fooling pixel before stopping

    def validate(self) -> None:
        super().validate()
        check_int("pixels", self.pixels, 1)
        check_choice("strategy", self.strategy, ("rand1", "best1"))
        check_choice("init", self.init, ("prior", "uniform"))
        check_range("prior_share", self.prior_share, 0.0, 1.0)
        check_range("stop_below", self.stop_below, 0.0, 1.0)
        check_int("check_every", self.check_every, 1)
        check_choice("objective", self.objective, ("confidence", "inconspicuous"))
        check_int("patience", self.patience, 1)


@register_attack
class OnePixel(Attack):
    name = "onepixel"
    Config = OnePixelConfig
    fixed_norm = "l0"
    paper = "Su, Vargas & Sakurai, IEEE TEVC 2019"
    config: OnePixelConfig

    def budget(self) -> float | None:
        return float(self.config.pixels)

    # -- evaluation ------------------------------------------------------------------------------
    def _evaluate(self, model: Classifier, x: torch.Tensor, goal: Goal, active: torch.Tensor, cand: torch.Tensor,
                  counter: Counter, visibility: Conspicuity | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Resistance and success (n, P) of candidates (n, P, D) for the images ``active``.

        The population is evaluated ``check_every`` members at a time across all images; an
        image stops being evaluated as soon as one of its candidates wins (its remaining
        entries stay at +inf, never selected). Queries are counted per image as spent.
        With ``visibility`` (the inconspicuous objective) every member is evaluated and the
        fitness of a fooling candidate is its colour difference squashed into [0, 1), below
        every non-fooling one (1 + resistance).
        """
        n, p, d = cand.shape
        fit = torch.full((n, p), float("inf"), device=x.device)
        won = torch.zeros(n, p, dtype=torch.bool, device=x.device)
        live = torch.ones(n, dtype=torch.bool, device=x.device)
        step = min(self.config.check_every, p)
        for j in range(0, p, step):
            rows = live.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            part = cand[rows, j:j + step]
            r, s = part.shape[:2]
            flat, owner = part.reshape(r * s, d), active[rows].repeat_interleave(s)
            logits = candidate_logits(model, x, owner, flat, self.config.pixels, self.config.eval_batch)
            f = goal.resistance(logits, owner)
            w = goal.success(logits, owner) & (f <= self.config.stop_below)
            if visibility is not None:
                de = visibility(owner, flat, self.config.pixels)
                f = torch.where(w, de / (1 + de), 1 + f)
            fit[rows, j:j + s], won[rows, j:j + s] = f.view(r, s), w.view(r, s)
            counter.count(active[rows], queries=s)
            if visibility is None:
                live[rows] = ~w.view(r, s).any(dim=1)
        return fit, won

    # -- initial population ----------------------------------------------------------------------
    def _initial(self, model: Classifier, x: torch.Tensor, goal: Goal, draw: Draw,
                 counter: Counter) -> torch.Tensor:
        cfg = self.config
        n, c, h, w = x.shape
        k, p = cfg.pixels, cfg.population
        pos = draw.rand(n, p, k, 2).cpu() * torch.tensor([h, w])
        colour = (0.5 + 0.5 * draw.randn(n, p, k, c).cpu()).clamp(0, 1)  # Su et al.: N(128, 127)
        pop = torch.cat([pos, colour], dim=-1).to(x.device)
        n_prior = round(cfg.prior_share * p) if cfg.init == "prior" else 0
        if n_prior:
            gain, corner = self._first_order_gain(model, x, goal)
            counter.count(None, gradients=1)
            # sample prior locations in proportion to the gain among the top 5 % of locations
            top = max(k, (h * w) // 20)
            vals, where = gain.flatten(1).topk(top, dim=1)
            weights = vals.clamp_min(0) + 1e-12
            # inverse-CDF sampling with replacement, from each image's own stream
            cdf = weights.cumsum(1) / weights.sum(1, keepdim=True)
            u = draw.rand(n, n_prior * k).to(cdf)
            picks = torch.searchsorted(cdf, u).clamp_max(top - 1)
            loc = where.gather(1, picks).view(n, n_prior, k)
            loc[:, 0] = where[:, :k]  # the first prior candidate is the greedy one: the k best locations
            rows, cols = loc // w, loc % w
            pos_p = torch.stack([rows, cols], dim=-1).float() + 0.5  # pixel centres
            col_p = corner.flatten(2).transpose(1, 2)[torch.arange(n, device=x.device)[:, None], loc.view(n, -1)]
            col_p = col_p.view(n, n_prior, k, c)
            pop[:, :n_prior] = torch.cat([pos_p, col_p], dim=-1)
        return pop.view(n, p, candidate_size(k, c))

    def _first_order_gain(self, model: Classifier, x: torch.Tensor, goal: Goal) -> tuple[torch.Tensor, torch.Tensor]:
        """Per location, the linearised loss gain of moving every channel to 0 or 1 (whichever
        helps), and that corner colour: a one-gradient map of where single pixels matter."""
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = goal.loss(model(xg)).sum()
            (grad,) = torch.autograd.grad(loss, [xg])
        corner = (grad > 0).to(x.dtype)                       # (n, C, H, W): best colour per channel
        gain = (grad * (corner - x)).sum(dim=1)               # (n, H, W)
        return gain, corner

    # -- the search ------------------------------------------------------------------------------
    def max_passes(self, task: Task, classes: int) -> Passes | None:
        cfg = self.config
        if cfg.objective != "confidence":
            return None  # the inconspicuous search runs until its patience is spent
        return Passes(gradients=1 if cfg.init == "prior" else 0,
                      forwards=cfg.population * (cfg.generations + 1) + 2)

    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        cfg = self.config
        n, _, h, w = x.shape
        k = cfg.pixels
        dev = x.device
        visibility = Conspicuity(x) if cfg.objective == "inconspicuous" else None
        best = torch.zeros(n, candidate_size(k, x.shape[1]), device=dev)
        best_fit = torch.full((n,), float("inf"), device=dev)
        stale = torch.zeros(n, dtype=torch.int64, device=dev)
        generations = torch.zeros(n, dtype=torch.int64, device=dev)

        def settle(active: torch.Tensor, cand: torch.Tensor, fit: torch.Tensor, won: torch.Tensor) -> torch.Tensor:
            """Record each active image's best candidate so far; True for the images that go on.

            confidence: an image is done at its first fooling candidate (any winner ranks before
            every non-winner). inconspicuous: done once it fools and its least visible fooling
            colour has not improved for ``patience`` generations."""
            rank = fit + 2.0 * (~won).float() if visibility is None else fit
            pick = rank.argmin(dim=1)
            arange = torch.arange(active.numel(), device=dev)
            if visibility is None:
                best[active] = cand[arange, pick]
                return ~won.any(dim=1)
            top = fit[arange, pick]
            improved = top < best_fit[active] - 1e-6
            best[active[improved]] = cand[arange, pick][improved]
            stale[active] = torch.where(improved, 0, stale[active] + 1)
            best_fit[active] = torch.minimum(best_fit[active], top)
            return ~((best_fit[active] < 1) & (stale[active] >= cfg.patience))

        active = torch.arange(n, device=dev)
        pop = clip_candidates(self._initial(model, x, goal, rng.rows(), counter), k, h, w)
        fit, won = self._evaluate(model, x, goal, active, pop, counter, visibility)
        keep = settle(active, pop, fit, won)
        active, pop, fit = active[keep], pop[keep], fit[keep]
        for g in range(cfg.generations):
            if active.numel() == 0:
                break
            mutant = de_offspring(pop, fit, rng.rows(active), f=cfg.f, crossover=cfg.crossover, strategy=cfg.strategy)
            trial = clip_candidates(mutant, k, h, w)
            t_fit, t_won = self._evaluate(model, x, goal, active, trial, counter, visibility)
            generations[active] = g + 1
            better = t_fit <= fit
            pop = torch.where(better.unsqueeze(-1), trial, pop)
            fit = torch.where(better, t_fit, fit)
            if visibility is None:
                going = settle(active, trial, t_fit, t_won)  # winners come from this generation's trials
                # the others keep their lowest-resistance member so far
                settle(active[going], pop[going], fit[going], torch.zeros_like(fit[going], dtype=torch.bool))
            else:
                going = settle(active, pop, fit, fit < 1)
            active, pop, fit = active[going], pop[going], fit[going]
        counter.extras["generations"] = generations
        counter.extras["candidate"] = best.view(n, k, -1)
        counter.extras["delta_e"] = (visibility or Conspicuity(x))(torch.arange(n, device=dev), best, k)
        return write_pixels(x, torch.arange(n, device=dev), best, k)
