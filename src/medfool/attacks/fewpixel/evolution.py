"""Differential-evolution variation for populations of many images at once, and the
non-dominated sorting and crowding distance of NSGA-II (Deb et al., IEEE TEVC 6(2), 2002).

Populations are (n, P, D): n images, P members, D genes. Everything is a tensor operation over
all images and members; nothing loops over them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medfool.attacks.base import AttackConfig, check_int, check_range
from medfool.utils.rng import Draw

__all__ = [
    "EvolutionConfig", "crowding_distance", "de_offspring", "distinct_others", "nondominated_rank",
    "nsga2_select",
]


@dataclass(frozen=True, kw_only=True)
class EvolutionConfig(AttackConfig):
    """Settings every evolutionary pixel attack shares."""

    population: int = 400           # candidates per image
    generations: int = 100          # at most
    f: float = 0.5                  # DE differential weight
    crossover: float = 1.0          # probability of taking each gene from the mutant (1: no crossover)
    eval_batch: int = 0             # candidates per model call (0: automatic, fastest on CPU)

    def validate(self) -> None:
        check_int("population", self.population, 4)
        check_int("generations", self.generations, 0)
        check_range("f", self.f, 0.0, 2.0, lo_open=True)
        check_range("crossover", self.crossover, 0.0, 1.0)
        check_int("eval_batch", self.eval_batch, 0)


def distinct_others(n: int, p: int, count: int, draw: Draw) -> list[torch.Tensor]:
    """For every (image, member) ``count`` distinct population indices other than the member
    itself: offsets drawn without replacement from 1..p-1 (each new draw skips the earlier ones,
    in increasing order), added to the member's index modulo p."""
    offsets: list[torch.Tensor] = []
    for j in range(count):
        o = draw.randint(1, p - j, n, p).cpu()
        if offsets:
            for prev in torch.stack(offsets).sort(dim=0).values:
                o = o + (o >= prev).long()
        offsets.append(o)
    members = torch.arange(p).view(1, p)
    return [(members + o) % p for o in offsets]


def de_offspring(pop: torch.Tensor, fit: torch.Tensor | None, draw: Draw, *, f: float, crossover: float,
                 strategy: str = "rand1") -> torch.Tensor:
    """One trial per member: DE/rand/1 (``x_r1 + F (x_r2 - x_r3)``) or DE/best/1 (from the member
    with the lowest ``fit``), then binomial crossover with the parent (``crossover`` = 1: the
    mutant whole). ``draw`` has one row per image (each image's population draws from its own
    stream)."""
    n, p, _ = pop.shape
    dev = pop.device
    rows = torch.arange(n, device=dev).view(n, 1)
    r = [ri.to(dev) for ri in distinct_others(n, p, 3, draw)]
    if strategy == "best1":
        if fit is None:
            raise ValueError("DE/best/1 needs the population's fitness")
        base = pop[rows[:, 0], fit.argmin(dim=1)].unsqueeze(1)
        mutant = base + f * (pop[rows, r[0]] - pop[rows, r[1]])
    else:
        mutant = pop[rows, r[0]] + f * (pop[rows, r[1]] - pop[rows, r[2]])
    if crossover < 1.0:  # at least one gene comes from the mutant
        take = draw.rand(*mutant.shape).to(dev) < crossover
        forced = draw.randint(0, mutant.shape[-1], *mutant.shape[:-1]).to(dev)
        take.scatter_(-1, forced.unsqueeze(-1), True)
        mutant = torch.where(take, mutant, pop)
    return mutant


def nondominated_rank(obj: torch.Tensor) -> torch.Tensor:
    """(n, M, K) objectives to minimise -> (n, M) front index (0 = Pareto front), by peeling
    fronts: one tensor step per front, not per member."""
    le = (obj.unsqueeze(1) <= obj.unsqueeze(2)).all(dim=-1)   # [i, j]: j is no worse than i everywhere
    lt = (obj.unsqueeze(1) < obj.unsqueeze(2)).any(dim=-1)    # [i, j]: j is better somewhere
    dominated_by = le & lt                                    # [i, j]: j dominates i
    n, m, _ = obj.shape
    rank = torch.full((n, m), -1, dtype=torch.long, device=obj.device)
    remaining = torch.ones(n, m, dtype=torch.bool, device=obj.device)
    front = 0
    while bool(remaining.any()):
        free = remaining & ~(dominated_by & remaining.unsqueeze(1)).any(dim=2)
        rank[free] = front
        remaining &= ~free
        front += 1
    return rank


def crowding_distance(obj: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """(n, M) NSGA-II crowding distance within each member's front (inf at a front's ends);
    objectives are scaled by their range over the whole population."""
    n, m, k = obj.shape
    span = (obj.amax(dim=1) - obj.amin(dim=1)).clamp_min(1e-12)             # (n, K)
    dist = torch.zeros(n, m, device=obj.device)
    for j in range(k):  # a loop over the (two) objectives only
        v = obj[..., j] / span[:, j:j + 1]
        key = rank.double() * 1e6 + (v - v.amin(dim=1, keepdim=True)).double()
        order = key.argsort(dim=1)
        sv, sr = v.gather(1, order), rank.gather(1, order)
        prev_v = torch.cat([sv[:, :1], sv[:, :-1]], dim=1)
        next_v = torch.cat([sv[:, 1:], sv[:, -1:]], dim=1)
        prev_same = torch.cat([torch.zeros_like(sr[:, :1], dtype=torch.bool), sr[:, 1:] == sr[:, :-1]], dim=1)
        next_same = torch.cat([sr[:, :-1] == sr[:, 1:], torch.zeros_like(sr[:, :1], dtype=torch.bool)], dim=1)
        gap = torch.where(prev_same & next_same, next_v - prev_v, torch.full_like(sv, float("inf")))
        dist.scatter_add_(1, order, gap)
    return dist


def nsga2_select(obj: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (n, keep) of the members NSGA-II keeps (lower front first, then larger crowding
    distance), and every member's front index."""
    rank = nondominated_rank(obj)
    crowd = crowding_distance(obj, rank).clamp(max=1e3)
    key = rank.double() * 1e4 - crowd.double()
    return key.argsort(dim=1)[:, :keep], rank
