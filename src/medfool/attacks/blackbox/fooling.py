"""Fooling images: pictures of nothing that the model labels with >= 99 % confidence.

Nguyen, Yosinski & Clune, "Deep Neural Networks are Easily Fooled: High Confidence
Predictions for Unrecognizable Images", CVPR 2015. As in the paper, a MAP-Elites archive over
the model's classes keeps each class's ``elites`` best images so far, and every evaluated
image competes in every class. New images come from one emitter per class still below the
threshold (in the spirit of CMA-ME, Fontaine et al., GECCO 2020): a natural evolution
strategy (Wierstra et al., JMLR 2014) that samples antithetic Gaussian variations of its
current genome, weights them by the ranks of the class's log-probability and moves with
Adam. Plain mutate-and-select stalls on these models (several classes stay below 20 %). Two
encodings, as in the paper:

* ``direct``: the genome is the image, started from uniform noise; variations are drawn at
  a coarser resolution and enlarged;
* ``cppn``: the genome is a small compositional pattern-producing network (inputs x, y,
  distance to the centre and a bias; hidden units with sine, Gaussian, tanh or sigmoid
  activations; one sigmoid output per channel) that paints regular, repeating patterns. All
  genomes are rendered in one batched product.

Only the model's probabilities are used (black-box); every evaluated image is one query.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from medfool.attacks.blackbox.oracle import QueryCounter
from medfool.models.predict import PredictModel
from medfool.vocab import MULTI_LABEL

__all__ = ["ENCODINGS", "FoolingConfig", "FoolingResult", "fooling_images"]

ENCODINGS = ("direct", "cppn")
_ACTS = (torch.sin, lambda t: torch.exp(-t * t), torch.tanh, torch.sigmoid)


@dataclass(frozen=True, kw_only=True)
class FoolingConfig:
    encoding: str = "direct"
    generations: int = 3000
    samples: int = 32           # evaluations per class and generation (antithetic pairs)
    elites: int = 4             # images kept per class (the grid's columns)
    threshold: float = 0.99     # a class is done once its best image reaches this confidence
    sigma: float = 0.05         # sampling spread around each emitter (pixels; x4 for cppn weights)
    lr: float = 0.03            # Adam step of each emitter per generation (pixels; x5 for cppn weights)
    noise_res: int = 0          # direct: resolution the search directions are drawn at (0: half the image)
    patience: int = 50          # generations without progress before a class halves its steps
    hidden: int = 16            # cppn: units per hidden layer
    layers: int = 3             # cppn: hidden layers

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.samples < 2 or self.samples % 2:
            raise ValueError(f"samples must be an even number >= 2, got {self.samples}")
        for name in ("generations", "elites", "hidden", "layers", "noise_res", "patience"):
            if getattr(self, name) < (0 if name == "noise_res" else 1):
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.threshold <= 1 or self.sigma <= 0 or self.lr <= 0:
            raise ValueError("threshold must be in (0, 1], sigma and lr > 0")


@dataclass
class FoolingResult:
    """Per class (K, E, C, H, W) images and (K, E) confidences, best first."""

    images: torch.Tensor
    confidence: torch.Tensor
    queries: int
    generations_run: int
    wall_s: float
    history: list[list[float]] = field(default_factory=list)  # best confidence per class, per generation

    def reached(self, threshold: float = 0.99) -> list[bool]:
        return [bool(c) for c in self.confidence[:, 0] >= threshold]

    def summary(self, class_names: tuple[str, ...], threshold: float) -> dict[str, Any]:
        best = self.confidence[:, 0].tolist()
        return {"classes_reached": sum(self.reached(threshold)), "classes": len(best), "threshold": threshold,
                "best_confidence": dict(zip(class_names, best, strict=True)), "queries": self.queries,
                "generations": self.generations_run, "wall_s": self.wall_s}


class _CPPN:
    """A batch of fixed-topology CPPNs: weights (P, ...) and an activation per hidden unit."""

    def __init__(self, cfg: FoolingConfig, channels: int, h: int, w: int, device: torch.device) -> None:
        self.cfg, self.channels = cfg, channels
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        r = torch.sqrt(xs ** 2 + ys ** 2)
        self.inputs = torch.stack([xs, ys, r, torch.ones_like(r)], dim=-1).view(1, h * w, 4).to(device)
        self.shape = (channels, h, w)
        sizes = [4] + [cfg.hidden] * cfg.layers + [channels]
        self.splits = list(itertools.pairwise(sizes))
        self.n_weights = sum(a * b for a, b in self.splits)

    def random(self, p: int, gen: torch.Generator) -> torch.Tensor:
        """Genomes (P, n_weights + hidden * layers): weights, then one activation code per unit."""
        w = torch.randn(p, self.n_weights, generator=gen) * 1.5
        acts = torch.randint(0, len(_ACTS), (p, self.cfg.hidden * self.cfg.layers), generator=gen).float()
        return torch.cat([w, acts], dim=1).to(self.inputs.device)

    def render(self, g: torch.Tensor) -> torch.Tensor:
        p = g.shape[0]
        h_ = self.inputs.expand(p, -1, -1)
        offset = 0
        acts = g[:, self.n_weights:].long().view(p, self.cfg.layers, self.cfg.hidden)
        for layer, (a, b) in enumerate(self.splits):
            weights = g[:, offset:offset + a * b].view(p, a, b)
            offset += a * b
            z = torch.bmm(h_, weights)                                          # (P, HW, b)
            if layer == len(self.splits) - 1:
                h_ = torch.sigmoid(z)
                break
            code = acts[:, layer].view(p, 1, b).expand_as(z)
            out = torch.zeros_like(z)
            for k, fn in enumerate(_ACTS):  # a loop over 4 activation kinds, not over units
                out = torch.where(code == k, fn(z), out)
            h_ = out
        c, hh, ww = self.shape
        return h_.view(p, hh, ww, c).permute(0, 3, 1, 2).contiguous()


class _Emitters:
    """One natural-evolution-strategy search per class (Wierstra et al. 2014), stepped with Adam:
    the mean genome, its step sizes and the Adam moments."""

    def __init__(self, mean: torch.Tensor, n_w: int, cfg: FoolingConfig, cppn: bool) -> None:
        k, device = mean.shape[0], mean.device
        self.mean, self.n_w, self.cfg, self.cppn = mean, n_w, cfg, cppn
        self.sigma = torch.full((k,), cfg.sigma * (4 if cppn else 1), device=device)
        self.lr = torch.full((k,), cfg.lr * (5 if cppn else 1), device=device)
        self.stalled = torch.zeros(k, dtype=torch.long, device=device)
        self.m1 = torch.zeros(k, n_w, device=device)
        self.m2 = torch.zeros(k, n_w, device=device)

    def children(self, open_k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """(O * lam, G) samples around the open classes' means along the directions ``eps``."""
        o, lam = eps.shape[0], eps.shape[1]
        children = self.mean[open_k][:, None].repeat(1, lam, 1)
        children[:, :, :self.n_w] += self.sigma[open_k].view(o, 1, 1) * eps
        if not self.cppn:
            children = children.clamp(0, 1)
        return children.view(o * lam, -1)

    def step(self, open_k: torch.Tensor, eps: torch.Tensor, own: torch.Tensor, step: int) -> None:
        """Centred ranks of the samples' own-class scores weight the antithetic directions; an Adam
        step moves each open class's mean."""
        lam = eps.shape[1]
        util = own.argsort(dim=1).argsort(dim=1).float() / (lam - 1) - 0.5
        grad = (util[:, :, None] * eps).mean(1)
        m1, m2 = self.m1, self.m2
        m1[open_k] = 0.9 * m1[open_k] + 0.1 * grad
        m2[open_k] = 0.999 * m2[open_k] + 0.001 * grad * grad
        update = (m1[open_k] / (1 - 0.9 ** step)) / ((m2[open_k] / (1 - 0.999 ** step)).sqrt() + 1e-8)
        self.mean[open_k, :self.n_w] += self.lr[open_k].view(-1, 1) * update
        if not self.cppn:
            self.mean[open_k] = self.mean[open_k].clamp(0, 1)

    def slow_down(self, improved: torch.Tensor) -> None:
        """A class whose best has not moved for ``patience`` generations halves its steps
        (fine-tuning near a maximum, where Adam's constant step size would only oscillate)."""
        self.stalled = torch.where(improved, torch.zeros_like(self.stalled), self.stalled + 1)
        slow = self.stalled >= self.cfg.patience
        self.lr[slow], self.sigma[slow], self.stalled[slow] = self.lr[slow] / 2, self.sigma[slow] / 2, 0


class _Archive:
    """The MAP-Elites archive (Mouret & Clune 2015): the ``elites`` best genomes per class, where
    every sample competes in every class."""

    def __init__(self, genomes: torch.Tensor, fitness: torch.Tensor, elites: int) -> None:
        self.genomes, self.fitness, self.elites = genomes, fitness, elites             # (A, G), (A, K)
        self.k = fitness.shape[1]
        self.kk = torch.arange(self.k, device=fitness.device)
        self.elite_idx = fitness.topk(min(elites, fitness.shape[0]), dim=0).indices.t()  # (K, E)

    def best(self) -> torch.Tensor:
        """(K,) each class's best log-probability."""
        return self.fitness[self.elite_idx[:, 0], self.kk]

    def add(self, genomes: torch.Tensor, fitness: torch.Tensor) -> None:
        k, device = self.k, fitness.device
        base = self.genomes.shape[0]
        archive = torch.cat([self.genomes, genomes])
        arch_fit = torch.cat([self.fitness, fitness])
        pool = torch.cat([self.elite_idx, torch.arange(base, base + genomes.shape[0], device=device).expand(k, -1)],
                         dim=1)
        keep = arch_fit[pool, self.kk.view(k, 1)].topk(min(self.elites, pool.shape[1]), dim=1).indices
        elite_idx = pool.gather(1, keep)
        used = elite_idx.unique()
        remap = torch.full((archive.shape[0],), -1, dtype=torch.long, device=device)
        remap[used] = torch.arange(used.numel(), device=device)
        self.genomes, self.fitness, self.elite_idx = archive[used], arch_fit[used], remap[elite_idx]


def fooling_images(model: PredictModel, cfg: FoolingConfig, gen: torch.Generator, *,
                   queries: int | None = None, classes: list[int] | None = None) -> FoolingResult:
    """Evolve fooling images for ``classes`` (default all) within ``queries`` model evaluations.
    Kept whole: the encoding's render, query and noise closures share the model, the counter and
    the generator; the emitters and the archive are their own classes above."""
    if model.output != "probs":
        raise ValueError("fooling images need the model's probabilities")
    if model.task == MULTI_LABEL:
        raise ValueError("fooling images are defined for single-label models")
    start = time.perf_counter()
    c, h, w = model.meta.input_shape
    device = model.device
    classes = list(range(model.num_classes)) if classes is None else classes
    k, lam = len(classes), cfg.samples
    counter = QueryCounter(model, 1, queries, device)
    cppn = _CPPN(cfg, c, h, w, device) if cfg.encoding == "cppn" else None
    kk = torch.arange(k, device=device)
    res = (cfg.noise_res or max(1, h // 2)) if cppn is None else 0

    def render(genomes: torch.Tensor) -> torch.Tensor:
        return cppn.render(genomes) if cppn is not None else genomes.view(-1, c, h, w).clamp(0, 1)

    def evaluate(genomes: torch.Tensor) -> torch.Tensor:
        """(P, K) log-probabilities of the classes; one query per genome."""
        scores = counter.query(render(genomes), torch.zeros(genomes.shape[0], dtype=torch.long, device=device))
        return scores[:, classes]

    def noise(o: int) -> torch.Tensor:
        """(o, lam, n_w) antithetic search directions; for images drawn at a coarser resolution
        and enlarged (a smoother search space: fewer queries per useful direction)."""
        if cppn is not None:
            half = torch.randn(o, lam // 2, cppn.n_weights, generator=gen)
        else:
            coarse = torch.randn(o * (lam // 2), c, res, res, generator=gen)
            half = F.interpolate(coarse, size=(h, w), mode="nearest").view(o, lam // 2, -1)
        return torch.cat([half, -half], dim=1).to(device)

    # one emitter per class, started from noise: a random image, or a random CPPN
    mean = cppn.random(k, gen) if cppn is not None else torch.rand(k, c * h * w, generator=gen).to(device)
    emitters = _Emitters(mean, cppn.n_weights if cppn is not None else mean.shape[1], cfg, cppn is not None)
    archive = _Archive(mean.clone(), evaluate(mean), cfg.elites)
    best = archive.best().clone()
    history = [best.exp().tolist()]
    gens = 0
    log_thr = math.log(cfg.threshold)
    for step in range(1, cfg.generations + 1):
        open_k = (best < log_thr).nonzero().flatten()
        left = int(counter.remaining(torch.zeros(1, dtype=torch.long, device=device)))
        if open_k.numel() == 0 or left < lam * open_k.numel():
            break
        o = open_k.numel()
        eps = noise(o)                                                                # (O, lam, n_w)
        flat = emitters.children(open_k, eps)
        fit = evaluate(flat)                                                          # (O * lam, K)
        emitters.step(open_k, eps, fit.view(o, lam, k)[torch.arange(o, device=device), :, open_k], step)
        archive.add(flat, fit)
        new_best = archive.best()
        emitters.slow_down(new_best > best + 1e-6)
        best = new_best
        gens += 1
        history.append(best.exp().tolist())
    images = render(archive.genomes[archive.elite_idx.flatten()]).view(k, archive.elite_idx.shape[1], c, h, w)
    conf = archive.fitness[archive.elite_idx, kk.view(k, 1)].exp()
    return FoolingResult(images=images.detach(), confidence=conf.detach(), queries=int(counter.used[0]),
                         generations_run=gens, wall_s=time.perf_counter() - start, history=history)
