"""Attacks on a slide's diagnosis: the change lands in a few tiles, the answer is the slide's.

* :func:`pixel_search`: one- and k-pixel differential evolution (Su, Vargas & Sakurai, IEEE TEVC
  2019) on the slide, as Korpihalkola et al. ran it on patches of TUPAC16 slides, lifted to the
  slide: tiles are tried one after another, and in each a DE/rand/1 population of k-pixel
  candidates is scored by the *slide's* probability of malignancy. A tile whose first population
  does not move the slide's answer at all is left after that population (under max pooling a
  tile below the others is silent: evolution has no signal to follow). ``order="guided"`` tries the
  tiles the aggregator itself points at first (the most malignant tiles; the most attended for
  attention MIL), ``order="uniform"`` in a seeded random order: the baseline that says how much
  the aggregator's own signal gives away. Black-box: a query is one slide answer.
* :func:`patch_attack`: an adversarial patch (Brown et al. 2017) on one tile, white-box through
  the aggregator.
* :func:`fraction_attack`: an L-inf perturbation (PGD, Madry et al. 2018) on a fraction of the
  tissue tiles, white-box through the aggregator (after the 0.1 % of patches that cut pathology
  foundation models' accuracy, arXiv:2505.24141).

Every attack returns :class:`SlideEdit` s, level-0 pixels in uint8 as they would be written to
the file, and judges success on those quantised values; the caller re-checks from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from medfool.attacks.fewpixel.evolution import de_offspring
from medfool.attacks.fewpixel.pixels import candidate_size, clip_candidates, write_pixels
from medfool.errors import ConfigError
from medfool.utils.rng import GeneratorDraw
from medfool.wsi.forensics import SlideEdit
from medfool.wsi.scorer import SlideScorer

__all__ = ["Order", "SlideAttackResult", "fraction_attack", "out_of_reach", "patch_attack", "pixel_search",
           "quantise", "tile_order"]

Order = Literal["guided", "uniform"]


@dataclass
class SlideAttackResult:
    """One attack on one slide, judged in memory on the quantised change (re-check from the file)."""

    attack: str
    to_malignant: bool
    probability_before: float
    probability_after: float
    success: bool
    queries: int = 0            # slide answers asked for (black-box searches)
    gradients: int = 0          # slide gradients taken (white-box attacks)
    tiles_tried: int = 0
    pixels_changed: int = 0
    tiles_changed: list[int] = field(default_factory=list)
    edits: list[SlideEdit] = field(default_factory=list)
    impossible: str = ""        # why no change of this reach can flip the slide (then nothing was tried)

    def nearest(self, p: float) -> None:
        """Keep ``p`` as ``probability_after`` when it is nearer the other answer than before."""
        self.probability_after = max(self.probability_after, p) if self.to_malignant \
            else min(self.probability_after, p)

    def summary(self) -> dict[str, object]:
        """The result as JSON-ready fields (the edits, being pixels, are left out)."""
        return {"attack": self.attack, "direction": "benign->malignant" if self.to_malignant else "malignant->benign",
                "probability_before": self.probability_before, "probability_after": self.probability_after,
                "success": self.success, "queries": self.queries, "gradients": self.gradients,
                "tiles_tried": self.tiles_tried, "pixels_changed": self.pixels_changed,
                "tiles_changed": self.tiles_changed, "impossible": self.impossible}


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Values a uint8 file can hold."""
    return (x * 255).round() / 255


def _fooled(p: torch.Tensor, to_malignant: bool, threshold: float) -> torch.Tensor:
    """Whether the slide probability ``p`` reads the other way than before."""
    return p >= threshold if to_malignant else p < threshold


def out_of_reach(scorer: SlideScorer, tiles: int, threshold: float) -> str:
    """Why changing ``tiles`` tiles cannot read a malignant slide as benign under max pooling
    (every tile at or above the threshold must fall below it), or "" when it might."""
    if scorer.kind != "max":
        return ""
    above = int((scorer.scores >= threshold).sum())
    if above <= tiles or scorer.probability() < threshold:
        return ""
    return (f"{above} tiles read malignant and max pooling needs every one below the threshold; this attack "
            f"changes at most {tiles}")


def _begin(scorer: SlideScorer, name: str, threshold: float, reach: int) -> SlideAttackResult:
    """The result an attack starts from: the slide's reading, the direction that changes it, and
    whether changing ``reach`` tiles can (see :func:`out_of_reach`)."""
    before = scorer.probability()
    return SlideAttackResult(name, before < threshold, before, before, False,
                             impossible=out_of_reach(scorer, reach, threshold))


def tile_order(scorer: SlideScorer, order: Order, seed: int) -> np.ndarray:
    """The order tiles are tried in: by the aggregator's own tile signal (malignancy, or
    attention), highest first, or a seeded random permutation."""
    if order == "guided":
        return np.argsort(-scorer.scores.detach().cpu().numpy(), kind="stable")
    if order == "uniform":
        return np.random.default_rng(seed).permutation(scorer.n)
    raise ConfigError(f"unknown tile order {order!r} (guided, uniform)")


def _changed(origin: np.ndarray, before: torch.Tensor, after: torch.Tensor) -> tuple[SlideEdit, int]:
    """The smallest box of one tile that holds every changed pixel, as an edit, and their count."""
    a = (after.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    b = (before.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    diff = (a != b).any(axis=2)
    if not diff.any():
        return SlideEdit(int(origin[0]), int(origin[1]), a[:0, :0]), 0
    rows, cols = np.nonzero(diff)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    return SlideEdit(int(origin[0] + c0), int(origin[1] + r0), a[r0:r1, c0:c1].copy()), int(diff.sum())


def _tile_de(scorer: SlideScorer, tile: torch.Tensor, index: int, *, pixels: int, to_malignant: bool,
             threshold: float, population: int, generations: int,
             seed: int) -> tuple[torch.Tensor | None, int, float]:
    """DE/rand/1 on one tile (1, C, H, W): the first fooling tile found (None if none), the
    queries spent, and the slide probability nearest the other answer that the search reached."""
    _, c, h, w = tile.shape
    draw = GeneratorDraw(torch.Generator().manual_seed(seed))
    idx = torch.full((population,), index, dtype=torch.long)
    owner = torch.zeros(population, dtype=torch.long)

    def clip(cand: torch.Tensor) -> torch.Tensor:
        out = clip_candidates(cand, pixels, h, w).view(1, population, pixels, -1)
        return torch.cat([out[..., :2], quantise(out[..., 2:])], dim=-1).view(1, population, -1)

    def score(cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            p = scorer.replaced(idx, write_pixels(tile, owner, cand[0], pixels).to(tile.device)).cpu()
        return (-p if to_malignant else p)[None], _fooled(p, to_malignant, threshold)

    pos = draw.rand(1, population, pixels, 2) * torch.tensor([float(h), float(w)])
    colour = 0.5 + 0.5 * draw.randn(1, population, pixels, c)  # Su et al.: N(128, 127)
    pop = clip(torch.cat([pos, colour], dim=-1).view(1, population, candidate_size(pixels, c)))
    fit, won = score(pop)
    if scorer.kind == "max" and not won.any() and bool((fit == fit[0, 0]).all()):
        # a silent tile: no candidate moved the slide's answer at all (under max pooling a tile
        # below the others never does), so evolution has nothing to follow; the attacker moves on
        return None, population, float(-fit.min() if to_malignant else fit.min())
    queries = 0
    for g in range(generations + 1):
        if g:
            trial = clip(de_offspring(pop, fit, draw, f=0.5, crossover=1.0))
            t_fit, won = score(trial)
            better = t_fit <= fit
            pop, fit = torch.where(better[..., None], trial, pop), torch.where(better, t_fit, fit)
            cands = trial
        else:
            cands = pop
        if won.any():
            first = int(won.nonzero()[0, 0])
            return write_pixels(tile, owner[:1], cands[0, first:first + 1], pixels), queries + first + 1, 0.0
        queries += population
    best = float(fit.min())
    return None, queries, -best if to_malignant else best


def pixel_search(scorer: SlideScorer, tiles: torch.Tensor, origins: np.ndarray, *, pixels: int = 1,
                 order: Order = "guided", threshold: float = 0.5, population: int = 100, generations: int = 10,
                 max_tiles: int = 20, seed: int = 0) -> SlideAttackResult:
    """k pixels in one tile, tiles tried in ``order`` until the slide's answer flips or
    ``max_tiles`` tiles have each spent ``population * (generations + 1)`` queries."""
    if pixels < 1 or population < 4 or max_tiles < 1:
        raise ConfigError("pixel search: pixels >= 1, population >= 4 and max_tiles >= 1")
    result = _begin(scorer, f"{pixels}-pixel DE ({order})", threshold, 1)
    if result.impossible:
        return result
    to_malignant = result.to_malignant
    for i in tile_order(scorer, order, seed)[:max_tiles].tolist():
        result.tiles_tried += 1
        found, spent, reached = _tile_de(scorer, tiles[i:i + 1], i, pixels=pixels, to_malignant=to_malignant,
                                threshold=threshold, population=population, generations=generations,
                                seed=seed * 1_000_003 + i)
        result.queries += spent
        if found is not None:
            with torch.no_grad():
                reached = float(scorer.replaced(torch.tensor([i]), found)[0])
            if bool(_fooled(torch.tensor(reached), to_malignant, threshold)):
                edit, changed = _changed(origins[i], tiles[i], found[0])
                result.probability_after, result.pixels_changed, result.success = reached, changed, True
                result.tiles_changed, result.edits = [i], [edit]
                break
        result.nearest(reached)
    return result


def _objective(p: torch.Tensor, to_malignant: bool) -> torch.Tensor:
    """Log-probability of the other answer (to maximise)."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p) if to_malignant else torch.log1p(-p)


def patch_attack(scorer: SlideScorer, tiles: torch.Tensor, origins: np.ndarray, *, size: int = 16,
                 steps: int = 100, lr: float = 0.1, candidates: int = 3, threshold: float = 0.5,
                 seed: int = 0) -> SlideAttackResult:
    """A ``size`` x ``size`` patch of any colours at the centre of one tile, optimised with Adam
    through the aggregator; the ``candidates`` tiles the aggregator points at are tried in turn."""
    h, w = tiles.shape[-2:]
    if not 1 <= size <= min(h, w) or steps < 1:
        raise ConfigError(f"patch size must be between 1 and the tile's {min(h, w)} px, steps >= 1")
    result = _begin(scorer, f"patch {size}x{size} px", threshold, 1)
    if result.impossible:
        return result
    to_malignant = result.to_malignant
    r0, c0 = (h - size) // 2, (w - size) // 2
    for i in tile_order(scorer, "guided", seed)[:candidates].tolist():
        result.tiles_tried += 1
        param = torch.logit(tiles[i:i + 1, :, r0:r0 + size, c0:c0 + size].clamp(0.02, 0.98)).requires_grad_(True)
        opt = torch.optim.Adam([param], lr=lr)
        for _ in range(steps):
            adv = tiles[i:i + 1].clone()
            adv[:, :, r0:r0 + size, c0:c0 + size] = torch.sigmoid(param)
            p = scorer.with_tiles(torch.tensor([i]), adv)
            result.gradients += 1
            with torch.no_grad():
                q = quantise(adv)
                pq = scorer.with_tiles(torch.tensor([i]), q)
            if bool(_fooled(pq, to_malignant, threshold)):
                edit, changed = _changed(origins[i], tiles[i], q[0])
                result.success, result.probability_after, result.pixels_changed = True, float(pq), changed
                result.tiles_changed, result.edits = [i], [edit]
                return result
            (param.grad,) = torch.autograd.grad(-_objective(p, to_malignant), [param])  # no grads left on weights
            opt.step()
            result.nearest(float(pq))
    return result


def fraction_attack(scorer: SlideScorer, tiles: torch.Tensor, origins: np.ndarray, *, fraction: float,
                    eps: float = 8 / 255, steps: int = 20, threshold: float = 0.5) -> SlideAttackResult:
    """PGD within ``eps`` (L-inf) on ``fraction`` of the tissue tiles (at least one), those the
    aggregator points at, through the aggregator. For max pooling every changed tile is also
    pushed on its own, so the gradient reaches every tile that holds the slide's answer."""
    if not 0 < fraction <= 1 or not eps > 0 or steps < 1:
        raise ConfigError("PGD on tiles: the fraction must be in (0, 1], eps > 0 and steps >= 1")
    t = max(1, round(fraction * scorer.n))
    result = _begin(scorer, f"PGD {eps * 255:.0f}/255 on {fraction:.1%} of tiles", threshold, t)
    if result.impossible:
        return result
    result.tiles_tried, to_malignant = t, result.to_malignant
    idx = torch.from_numpy(tile_order(scorer, "guided", 0)[:t].copy())
    x = tiles[idx]
    lo, hi = torch.ceil((x - eps) * 255 - 1e-6) / 255, torch.floor((x + eps) * 255 + 1e-6) / 255
    adv, q, pq = x.clone(), x.clone(), result.probability_before
    alpha = max(eps / 4, 1 / 255)
    for _ in range(steps):
        adv.requires_grad_(True)
        p = scorer.with_tiles(idx, adv)
        loss = _objective(p, to_malignant)
        if scorer.kind != "attention":
            own = scorer.tile_terms(adv)[0]
            loss = loss + _objective(own, to_malignant).mean()
        (grad,) = torch.autograd.grad(loss, [adv])
        result.gradients += 1
        with torch.no_grad():
            adv = torch.minimum(torch.maximum(adv + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
            q = torch.minimum(torch.maximum(quantise(adv), lo), hi)  # uint8 values within eps of x
            pq = float(scorer.with_tiles(idx, q))
        if bool(_fooled(torch.tensor(pq), to_malignant, threshold)):
            break
    result.probability_after = pq
    result.success = bool(_fooled(torch.tensor(pq), to_malignant, threshold))
    for j, i in enumerate(idx.tolist()):
        edit, changed = _changed(origins[i], x[j], q[j])
        if changed:
            result.edits.append(edit)
            result.tiles_changed.append(i)
            result.pixels_changed += changed
    return result
