"""Where single pixels matter: vulnerability maps, locality and propagation maps.

* Vulnerability map (after Kügler et al.): for one image, the largest drop of the model's
  resistance (true-class probability, or one minus the target's) a single pixel can cause at
  each location, found by trying a set of colours everywhere: the corners of the colour cube
  and some random colours, all locations and colours evaluated in batches.
* Locality (Vargas & Su, "Understanding the one-pixel attack: propagation maps and locality
  analysis", 2019): a successful one-pixel perturbation moved to the pixels at Chebyshev
  distance 1, 2, 3 ... around it; the share of those that still fool the model.
* Propagation map (same paper): per layer, the channel-summed absolute difference between the
  activations on the clean and on the attacked image: how one pixel's change spreads through
  the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medfool.attacks.fewpixel.pixels import candidate_logits, write_pixels
from medfool.attacks.goal import Goal
from medfool.models.classifier import Classifier

__all__ = ["VulnerabilityMap", "colour_set", "locality", "map_queries", "map_stride", "propagation_map", "ring_offsets",
           "vulnerability_map"]


def colour_set(channels: int, samples: int, gen: torch.Generator) -> torch.Tensor:
    """(M, C): the 2^C corners of the colour cube, then ``samples`` uniform random colours."""
    corners = torch.tensor([[(i >> c) & 1 for c in range(channels)] for i in range(2 ** channels)], dtype=torch.float32)
    return torch.cat([corners, torch.rand(samples, channels, generator=gen)])


@dataclass
class VulnerabilityMap:
    """Maps over the tested locations: every pixel, or with ``stride`` s every s-th row and
    column (the centre of each s x s cell), so the maps are (ceil(H/s), ceil(W/s))."""

    drop: torch.Tensor      # (h, w): clean resistance minus the best resistance reached at each location
    colour: torch.Tensor    # (h, w, C): the colour reaching it
    fooled: torch.Tensor    # (h, w) bool: that pixel alone fools the model
    clean_resistance: float
    queries: int
    rows: torch.Tensor      # (h,) image rows of the tested locations
    cols: torch.Tensor      # (w,) image columns
    stride: int = 1

    @property
    def tested(self) -> str:
        """What the counts are over, for titles: "pixels" or "tested pixels (every s px)"."""
        return "pixels" if self.stride == 1 else f"tested pixels (every {self.stride} px)"

    def cells(self, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """A map at image size: each tested location's value fills its stride x stride cell."""
        s = self.stride
        return t.repeat_interleave(s, 0).repeat_interleave(s, 1)[:height, :width]


def map_stride(height: int, width: int, most: int = 64) -> int:
    """The automatic stride: exhaustive up to ``most`` pixels a side (MedMNIST's 28-64 px), then
    about ``most`` locations a side (every 4th pixel at 224 px: 16 times fewer model calls)."""
    return max(1, -(-max(height, width) // most))


def map_queries(channels: int, height: int, width: int, samples: int, stride: int) -> int:
    """The model calls of one map: every tested location times every colour, and the clean image."""
    colours = 2**channels + samples  # the colour cube's corners and the random ones (colour_set)
    return int(-(-height // stride) * -(-width // stride) * colours + 1)


def vulnerability_map(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, target: int | None = None,
                      samples: int = 8, seed: int = 0, eval_batch: int = 0, stride: int = 1) -> VulnerabilityMap:
    """Single-pixel search over every location of one image ``x`` (1, C, H, W), or over every
    ``stride``-th row and column."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"a vulnerability map is for one image (1, C, H, W), got {tuple(x.shape)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    _, c, h, w = x.shape
    goal = Goal(model.task, y, None if target is None else torch.tensor([target], device=x.device))
    colours = colour_set(c, samples, torch.Generator().manual_seed(seed)).to(x.device)   # (M, C)
    m = colours.shape[0]
    # the centre of each stride x stride cell (the last, partial cell: its last pixel at most)
    at_rows = (torch.arange(0, h, stride, device=x.device) + stride // 2).clamp_max(h - 1)
    at_cols = (torch.arange(0, w, stride, device=x.device) + stride // 2).clamp_max(w - 1)
    gh, gw = at_rows.numel(), at_cols.numel()
    rows, cols = torch.meshgrid(at_rows, at_cols, indexing="ij")
    loc = torch.stack([rows.flatten(), cols.flatten()], dim=1).float() + 0.5                 # (L, 2)
    cand = torch.cat([loc.repeat_interleave(m, 0), colours.repeat(gh * gw, 1)], dim=1)       # (L*M, 2+C)
    owner = torch.zeros(cand.shape[0], dtype=torch.long, device=x.device)
    with torch.no_grad():
        clean = float(goal.resistance(model(x))[0])
    logits = candidate_logits(model, x, owner, cand, 1, eval_batch)
    res, won = goal.resistance(logits, owner), goal.success(logits, owner)
    res, won = res.view(gh * gw, m), won.view(gh * gw, m)
    best = res.argmin(dim=1)
    idx = torch.arange(gh * gw, device=x.device)
    return VulnerabilityMap(drop=(clean - res[idx, best]).view(gh, gw), colour=colours[best].view(gh, gw, c),
                            fooled=won.any(dim=1).view(gh, gw), clean_resistance=clean,
                            queries=map_queries(c, h, w, samples, stride),
                            stride=stride, rows=at_rows, cols=at_cols)


def ring_offsets(d: int) -> torch.Tensor:
    """(8d, 2) offsets at Chebyshev distance exactly ``d``."""
    r = torch.arange(-d, d + 1)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    keep = torch.maximum(dy.abs(), dx.abs()) == d
    return torch.stack([dy[keep], dx[keep]], dim=1)


def locality(model: Classifier, x: torch.Tensor, y: torch.Tensor, candidate: torch.Tensor, *,
             target: torch.Tensor | None = None, max_distance: int = 3) -> list[dict[str, float]]:
    """Move each image's one-pixel ``candidate`` (N, 1, 2 + C) to every pixel at distance
    1..``max_distance`` (inside the image) and report the share that still fools the model."""
    h, w = x.shape[2], x.shape[3]
    goal = Goal(model.task, y, target)
    rows_out = []
    for d in range(0, max_distance + 1):
        off = ring_offsets(d).to(x.device) if d else torch.zeros(1, 2, dtype=torch.long, device=x.device)
        pos = candidate[:, 0, :2].floor().long()                                   # (N, 2)
        moved = pos[:, None, :] + off[None, :, :]                                   # (N, R, 2)
        inside = ((moved >= 0) & (moved < torch.tensor([h, w], device=x.device))).all(dim=2)
        img, ring = inside.nonzero(as_tuple=True)
        if img.numel() == 0:
            break
        cand = torch.cat([moved[img, ring].float() + 0.5, candidate[img, 0, 2:]], dim=1)
        with torch.no_grad():
            won = goal.success(model(write_pixels(x, img, cand, 1)), img)
        rows_out.append({"distance": d, "positions": int(img.numel()), "success": float(won.float().mean())})
    return rows_out


def _layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The network's top-level stages (children of a Sequential, else the named leaf convs)."""
    children = list(net.named_children())
    if isinstance(net, nn.Sequential) and children:
        return children
    return [(name, mod) for name, mod in net.named_modules() if isinstance(mod, nn.Conv2d)]


def propagation_map(model: Classifier, x: torch.Tensor, x_adv: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Per layer with a spatial output, (name, (h, w) channel-summed |activation difference|)
    between ``x`` and ``x_adv`` (one image each, (1, C, H, W))."""
    captured: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, module in _layers(model.network):
        def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4:
                captured.setdefault(name, []).append(out.detach().float())
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.cat([x, x_adv]))
    finally:
        for h in hooks:
            h.remove()
    maps = []
    for name, outs in captured.items():
        act = outs[-1]
        maps.append((name, (act[1] - act[0]).abs().sum(dim=0).cpu()))
    return maps
