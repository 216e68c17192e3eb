"""Square attack: random search over square windows at the corners of the eps-ball.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020. Each iteration proposes, for every image
still resisting, one change confined to a random s x s window (Linf: the window's pixels
jump to x +- eps, one sign per channel; L2: mass is moved between two windows with the
paper's "meta-pseudo-Gaussian" profile) and keeps it when the margin loss drops. The window
side shrinks on the paper's schedule of the fraction p of pixels changed, rescaled to the
query budget. Every image gets its own window and signs (the paper's code draws signs per
image and one window per batch; ART and torchattacks draw one proposal for the whole batch,
which ``proposals="batch"`` reproduces); one model call per iteration serves all active
images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from medfool.attacks.base import AttackConfig, check_choice, check_int, check_norm_eps, check_range, register_attack
from medfool.attacks.blackbox.base import BlackBoxAttack
from medfool.attacks.blackbox.oracle import QueryCounter
from medfool.attacks.goal import Goal
from medfool.attacks.passes import Passes
from medfool.utils.rng import Draw, ImageStreams
from medfool.vocab import Loss, Norm, Task

__all__ = ["Square", "SquareConfig", "eta", "p_selection"]

# iteration thresholds (out of 10,000) at which p halves, from the paper's code
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@dataclass(frozen=True, kw_only=True)
class SquareConfig(AttackConfig):
    eps: float = 8 / 255
    norm: Norm = "linf"
    queries: int = 1000       # per image, the clean query included
    p_init: float = 0.05      # initial fraction of pixels changed (paper: 0.05 Linf, 0.1 L2)
    loss: Loss = "margin"      # margin | ce
    proposals: str = "image"  # image: a window and signs per image | batch: one for all (as ART, torchattacks)

    def validate(self) -> None:
        check_norm_eps(self.norm, self.eps)
        check_int("queries", self.queries, 2)
        check_range("p_init", self.p_init, 0.0, 1.0, lo_open=True)
        check_choice("loss", self.loss, ("margin", "ce"))
        check_choice("proposals", self.proposals, ("image", "batch"))


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The fraction of pixels a window covers at iteration ``it`` of ``n_iters``."""
    scaled = int(it / max(1, n_iters) * 10000)
    return float(p_init / 2 ** sum(scaled > t for t in _SCHEDULE))


def _eta_rectangles(a: int, b: int) -> torch.Tensor:
    delta = torch.zeros(a, b)
    ca, cb = a // 2 + 1, b // 2 + 1
    r, c = ca - 1, cb - 1
    for k in range(max(ca, cb)):
        delta[max(r, 0):min(r + 2 * k + 1, a), max(c, 0):min(c + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
        r -= 1
        c -= 1
    return delta / delta.pow(2).sum().sqrt()


def eta(s: int, transpose: bool) -> torch.Tensor:
    """The paper's L2 window profile: two opposite-signed halves, unit norm."""
    d = torch.zeros(s, s)
    d[: s // 2] = _eta_rectangles(s // 2, s)
    d[s // 2:] = -_eta_rectangles(s - s // 2, s)
    d = d / d.pow(2).sum().sqrt()
    out: torch.Tensor = d.t().contiguous() if transpose else d
    return out


def _draws(k: int, draw: Draw, gen: torch.Generator | None, device: torch.device
           ) -> Callable[[int, int, tuple[int, ...]], torch.Tensor]:
    """randint(low, high, shape) -> (k, *shape): per image from ``draw``, or one draw from
    ``gen`` shared by the whole batch (``proposals="batch"``)."""
    def randint(low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        if gen is None:
            return draw.randint(low, high, k, *shape)
        return torch.randint(low, high, (1, *shape), generator=gen).to(device).expand(k, *shape)
    return randint


def _windows(h: int, w: int, s: int, randint: Callable[[int, int, tuple[int, ...]], torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random top-left corners (k,) of s x s windows (as in the paper's code, positions in
    [0, h - s))."""
    return randint(0, max(1, h - s), ()), randint(0, max(1, w - s), ())


def _mask(top: torch.Tensor, left: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(k, 1, h, w) bool: inside each image's window."""
    rows = torch.arange(h, device=top.device).view(1, h, 1)
    cols = torch.arange(w, device=top.device).view(1, 1, w)
    inside = (rows >= top.view(-1, 1, 1)) & (rows < (top + s).view(-1, 1, 1)) \
        & (cols >= left.view(-1, 1, 1)) & (cols < (left + s).view(-1, 1, 1))
    return inside[:, None]


def _take(t: torch.Tensor, top: torch.Tensor, left: torch.Tensor, s: int,
          which: torch.Tensor | None = None) -> torch.Tensor:
    """(k, C, s, s): the window of t (N, C, H, W) for each of k images (rows ``which`` of t, or
    all k rows)."""
    k = top.numel()
    rows = (top.view(k, 1) + torch.arange(s, device=t.device)).view(k, s, 1)
    cols = (left.view(k, 1) + torch.arange(s, device=t.device)).view(k, 1, s)
    pick = torch.arange(k, device=t.device) if which is None else which
    return t[pick.view(k, 1, 1), :, rows, cols].permute(0, 3, 1, 2)


def _put(t: torch.Tensor, top: torch.Tensor, left: torch.Tensor, values: torch.Tensor) -> None:
    """Write (k, C, s, s) values into each image's window of t, in place."""
    k, _, s, _ = values.shape
    rows = (top.view(k, 1) + torch.arange(s, device=t.device)).view(k, s, 1)
    cols = (left.view(k, 1) + torch.arange(s, device=t.device)).view(k, 1, s)
    t[torch.arange(k, device=t.device).view(k, 1, 1), :, rows, cols] = values.permute(0, 2, 3, 1)


def _norm(t: torch.Tensor) -> torch.Tensor:
    """(k, 1, 1, 1) L2 norm per image."""
    out: torch.Tensor = t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))
    return out


@register_attack
class Square(BlackBoxAttack):
    name = "square"
    Config = SquareConfig
    paper = "Andriushchenko et al., ECCV 2020"
    config: SquareConfig

    def max_passes(self, task: Task, classes: int) -> Passes:
        return Passes(forwards=self.config.queries + 1)  # the clean query is one of the queries

    def _loss(self, goal: Goal, scores: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Loss to minimise: the margin (the paper's default), or the cross-entropy's negative."""
        return -goal.loss(scores, idx, "margin" if self.config.loss == "margin" else "ce")

    def _init(self, x: torch.Tensor, draw: Draw) -> torch.Tensor:
        n, c, h, w = x.shape
        eps = self.config.eps

        def signs(*shape: int) -> torch.Tensor:
            return (draw.randint(0, 2, *shape) * 2 - 1).float().to(x.device)

        if self.config.norm == "linf":  # vertical stripes of +-eps
            return (x + eps * signs(n, c, 1, w)).clamp(0, 1)
        s = max(1, h // 5)
        delta = torch.zeros_like(x)
        start = (h - s * 5) // 2
        profile = eta(s, False).to(x.device)
        for i in range(h // s):
            for j in range(w // s):
                r, q = start + i * s, start + j * s
                if r + s <= h and q + s <= w:
                    delta[:, :, r:r + s, q:q + s] += profile * signs(n, c, 1, 1)
        return (x + delta / (_norm(delta) + 1e-12) * eps).clamp(0, 1)

    def _step_linf(self, x: torch.Tensor, best: torch.Tensor, active: torch.Tensor, s: int, draw: Draw,
                   gen: torch.Generator | None) -> torch.Tensor:
        """Candidates for the images at ``active``: their best point with one s x s window moved
        to x +- eps. Only the windows are computed (a full-image update per step would cost
        more than a small model's forward pass)."""
        k, (_, c, h, w) = active.numel(), x.shape
        shared = gen is not None
        if shared:
            randint = _draws(k, draw, gen, x.device)
            top, left = _windows(h, w, s, randint)
            sign = (randint(0, 2, (c, 1, 1)) * 2 - 1).float()
        else:  # one draw per image for the window and the signs (the hash is a measurable share of a step)
            u = draw.rand(k, 2 + c)
            span = max(1, h - s), max(1, w - s)
            top = (u[:, 0] * span[0]).long().clamp_max(span[0] - 1)
            left = (u[:, 1] * span[1]).long().clamp_max(span[1] - 1)
            sign = torch.where(u[:, 2:] < 0.5, -1.0, 1.0).view(k, c, 1, 1).to(x)
        cand = best[active]
        x_win = _take(x, top, left, s, active)
        new = (x_win + self.config.eps * sign).clamp(0, 1)
        # a window already at the drawn corner would waste the query: flip its signs instead
        same = (new - _take(cand, top, left, s)).abs().flatten(1).amax(1) < 1e-7
        if not shared and bool(same.any()):
            new[same] = (x_win[same] - self.config.eps * sign[same]).clamp(0, 1)
        _put(cand, top, left, new)
        return cand

    def _step_l2(self, x: torch.Tensor, best: torch.Tensor, s: int, draw: Draw,
                 gen: torch.Generator | None) -> torch.Tensor:
        k, c, h, w = x.shape
        eps = self.config.eps
        delta = best - x
        randint = _draws(k, draw, gen, x.device)
        top1, left1 = _windows(h, w, s, randint)
        top2, left2 = _windows(h, w, s, randint)
        win1 = _take(delta, top1, left1, s)
        norm_win1 = win1.pow(2).sum(dim=(2, 3), keepdim=True).sqrt()              # (k, C, 1, 1)
        union = _mask(top1, left1, s, h, w) | _mask(top2, left2, s, h, w)
        norm_image = _norm(delta)                                                 # (k, 1, 1, 1)
        norm_union = _norm(delta * union)
        transpose = randint(0, 2, (1, 1, 1)).bool()                               # (k, 1, 1, 1)
        profile = torch.where(transpose, eta(s, True).to(x.device), eta(s, False).to(x.device))
        sign = (randint(0, 2, (c, 1, 1)) * 2 - 1).float()
        new = profile * sign + win1 / (norm_win1 + 1e-12)
        budget = ((eps ** 2 - norm_image ** 2).clamp_min(0) / c + norm_union ** 2).sqrt()
        new = new / (new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt() + 1e-12) * budget
        _put(delta, top2, left2, torch.zeros_like(new))
        _put(delta, top1, left1, new)
        return (x + delta / (_norm(delta) + 1e-12) * eps).clamp(0, 1)

    def search(self, oracle: QueryCounter, x: torch.Tensor, goal: Goal, clean: torch.Tensor,
               rng: ImageStreams) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        cfg = self.config
        # per-image proposals draw from each image's stream; batch proposals from one generator
        gen = rng.generator if cfg.proposals == "batch" else None
        best, scores = x.clone(), clean.clone()
        everyone = torch.arange(n, device=x.device)
        margin = goal.margin(clean)
        todo = (margin > 0).nonzero().flatten()  # images the model already gets wrong are left alone
        todo = todo[oracle.remaining(todo) > 0]
        pending = torch.zeros(n, dtype=torch.bool, device=x.device)
        pending[todo] = True
        if todo.numel() == 0:
            return best, scores
        init = self._init(x[todo], rng.rows(todo))
        s_init = oracle.query(init, todo)
        best[todo], scores[todo] = init, s_init
        loss = torch.full((n,), float("inf"), device=x.device)
        loss[todo] = self._loss(goal, s_init, todo)
        margin[todo] = goal.margin(s_init, todo)
        n_iters = cfg.queries
        for it in range(n_iters):
            active = everyone[pending & (margin > 0) & (oracle.remaining() > 0)]
            if active.numel() == 0:
                break
            p = p_selection(cfg.p_init, it, n_iters)
            if cfg.norm == "linf":
                side = min(max(round(math.sqrt(p * h * w)), 1), h - 1)
                cand = self._step_linf(x, best, active, side, rng.rows(active), gen)
            else:
                side = max(round(math.sqrt(p * h * w)), 3)
                side = min(side + (side % 2 == 0), h - 1)
                cand = self._step_l2(x[active], best[active], side, rng.rows(active), gen)
            out = oracle.query(cand, active)
            new_loss, new_margin = self._loss(goal, out, active), goal.margin(out, active)
            keep = (new_loss < loss[active]) | (new_margin <= 0)
            upd = active[keep]
            best[upd], scores[upd] = cand[keep], out[keep]
            loss[upd], margin[upd] = new_loss[keep], new_margin[keep]
        return best, scores
