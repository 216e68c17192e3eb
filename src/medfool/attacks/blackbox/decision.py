"""Pieces shared by the decision-based attacks (HopSkipJump, Boundary): they see labels only.

Both start from an adversarial point (random uniform noise from the image's own random
stream and paid from its own query budget, kept once the model reads it wrongly, then pulled
towards the original by a binary search) and walk along the decision
boundary. Everything runs on all images at once, each with its own query budget.
"""

from __future__ import annotations

import torch

from medfool.attacks.blackbox.oracle import QueryCounter
from medfool.attacks.goal import Goal
from medfool.utils.rng import Draw, ImageStreams
from medfool.vocab import Norm

__all__ = ["binary_search", "blend", "near_boundary_start", "noise_start"]


def blend(x: torch.Tensor, far: torch.Tensor, alpha: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The point a fraction ``alpha`` (k,) of the way from x to ``far`` (L2), or ``far``
    clipped to the Linf ball of radius alpha (Linf)."""
    a = alpha.view(-1, 1, 1, 1)
    if norm == "l2":
        return (1 - a) * x + a * far
    return torch.maximum(torch.minimum(far, x + a), x - a)


def binary_search(oracle: QueryCounter, goal: Goal, idx: torch.Tensor, x: torch.Tensor, adv: torch.Tensor,
                  adv_scores: torch.Tensor, threshold: float, norm: Norm) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each adversarial point (k, ...) to the boundary between it and x, on its own budget.

    Returns the adversarial side of the final bracket and its scores (every returned point
    was queried, or is the input point)."""
    k = idx.numel()
    hi = torch.ones(k, device=x.device) if norm == "l2" else (adv - x).flatten(1).abs().amax(1)
    lo = torch.zeros(k, device=x.device)
    thr = torch.full((k,), threshold, device=x.device) if norm == "l2" else torch.clamp(hi * threshold,
                                                                                         max=threshold)
    best, best_scores = adv.clone(), adv_scores.clone()
    while True:
        open_ = ((hi - lo) > thr) & (oracle.remaining(idx) > 0)
        if not bool(open_.any()):
            break
        sel = open_.nonzero().flatten()
        mid = (hi[sel] + lo[sel]) / 2
        cand = blend(x[sel], adv[sel], mid, norm)
        out = oracle.query(cand, idx[sel])
        won = goal.success(out, idx[sel])
        hi[sel] = torch.where(won, mid, hi[sel])
        lo[sel] = torch.where(won, lo[sel], mid)
        best[sel[won]], best_scores[sel[won]] = cand[won], out[won]
    return best, best_scores


def near_boundary_start(oracle: QueryCounter, goal: Goal, x: torch.Tensor, clean: torch.Tensor, tries: int,
                        rng: ImageStreams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The images still to attack (correctly classified, budget left, a start found), each
    with an adversarial point pulled close to the decision boundary, and its scores. Every
    image finds its start with its own queries and its own random stream, so its walk is the
    same alone or in any batch."""
    todo = (~goal.success(clean)).nonzero().flatten()
    todo = todo[oracle.remaining(todo) > 0]
    if todo.numel() == 0:
        return todo, x[:0], clean[:0]
    start, scores, found = noise_start(oracle, goal, x, todo, tries, rng)
    todo, cur, cur_scores = todo[found], start[found], scores[found]
    if todo.numel() == 0:
        return todo, cur, cur_scores
    cur, cur_scores = binary_search(oracle, goal, todo, x[todo], cur, cur_scores, 1e-3, "l2")
    return todo, cur, cur_scores


def noise_start(oracle: QueryCounter, goal: Goal, x: torch.Tensor, idx: torch.Tensor, tries: int,
                rng: ImageStreams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random images the model gets wrong, one per image where one is found within ``tries``
    queries (each paid by that image); returns (points, their scores, found mask)."""
    k = idx.numel()
    start = x[idx].clone()
    scores = torch.zeros(0)
    found = torch.zeros(k, dtype=torch.bool, device=x.device)
    for t in range(tries):
        sel = (~found & (oracle.remaining(idx) > 0)).nonzero().flatten()
        if sel.numel() == 0:
            break
        noise = _random_image(rng.rows(idx[sel]), sel.numel(), x.shape[1:], t)
        out = oracle.query(noise, idx[sel])
        if scores.numel() == 0:
            scores = torch.zeros(k, out.shape[1], device=x.device)
        won = goal.success(out, idx[sel])
        start[sel[won]], scores[sel[won]] = noise[won], out[won]
        found[sel[won]] = True
    if scores.numel() == 0:
        scores = torch.zeros(k, 1, device=x.device)
    return start, scores, found


def _random_image(draw: Draw, k: int, shape: tuple[int, ...], t: int) -> torch.Tensor:
    """(k, *shape) random images of kind ``t % 3``: uniform noise; smooth noise (a random 2x2 to
    5x5 grid, upsampled); a flat random colour. A model that reads all pixel noise as one class
    usually reads some smooth pattern or colour as another."""
    c, h, w = shape
    if t % 3 == 0:
        return draw.rand(k, c, h, w)
    if t % 3 == 1:
        res = 2 + t % 4
        coarse = draw.rand(k, c, res, res)
        return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return draw.rand(k, c, 1, 1).expand(k, c, h, w).clone()
