"""Backdoor triggers: one formula, many looks.

Every trigger is a mask ``m`` (1, H, W) in [0, 1] and a pattern ``p`` (C, H, W) in [0, 1],
stamped as ``x' = (1 - m) * x + m * p``. A BadNets patch is a binary mask with a solid or
checkered pattern; a blended trigger (Chen et al. 2017) is a constant mask ``alpha`` over a
noise pattern; the slide-artefact triggers (a stain blob, a pen mark) are soft masks with an
ink colour. One formula means one exact ``apply`` to test, and the same parametrisation that
Neural Cleanse reverse-engineers.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medfool.errors import ConfigError, DataError

__all__ = [
    "COLOURS", "DEFAULT_COLOUR", "KINDS", "POSITIONS", "SHAPES", "Trigger", "describe", "make_trigger",
    "parse_colour", "parse_position",
]

KINDS = ("patch", "blend", "stain", "pen")
SHAPES = ("square", "checker", "cross")
POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center", "corners")
COLOURS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    # slide artefacts: haematoxylin-dark purple ink of a stain blob, a green and a blue marker pen
    "haematoxylin": (0.29, 0.13, 0.42),
    "marker-green": (0.10, 0.45, 0.25),
    "marker-blue": (0.12, 0.20, 0.60),
}
DEFAULT_COLOUR = {"patch": "white", "blend": "white", "stain": "haematoxylin", "pen": "marker-green"}


@dataclass(frozen=True)
class Trigger:
    """A stamp ``x' = (1 - mask) * x + mask * pattern`` for images of one shape.

    Shape: mask (1, H, W), pattern (C, H, W), both float32 in [0, 1].
    """

    mask: torch.Tensor
    pattern: torch.Tensor
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mask.ndim != 3 or self.mask.shape[0] != 1:
            raise ConfigError(f"trigger mask must have shape (1, H, W), got {tuple(self.mask.shape)}")
        if self.pattern.ndim != 3 or self.pattern.shape[1:] != self.mask.shape[1:]:
            raise ConfigError(f"trigger pattern must have shape (C, {self.mask.shape[1]}, {self.mask.shape[2]}), "
                              f"got {tuple(self.pattern.shape)}")
        for name, t in (("mask", self.mask), ("pattern", self.pattern)):
            if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
                raise ConfigError(f"trigger {name} values must be finite and in [0, 1]")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.pattern.shape
        return (int(c), int(h), int(w))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on a batch. Shape: (N, C, H, W) in [0, 1] -> same; ``x`` is not modified."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise DataError(f"trigger made for images of shape {self.image_shape}, got a batch of "
                            f"{tuple(x.shape[1:])}")
        m = self.mask.to(x.device, x.dtype)
        p = self.pattern.to(x.device, x.dtype)
        return (1 - m) * x + m * p

    def footprint(self) -> float:
        """Fraction of the image the trigger touches (mask > 0)."""
        return float((self.mask > 0).float().mean())

    # -- storage (numpy + JSON in one .npz, no pickle) ---------------------------------------
    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mask=self.mask.numpy(), pattern=self.pattern.numpy(),
                 description=np.array(json.dumps(self.description)))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "trigger") -> Trigger:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return cls(torch.from_numpy(z["mask"].astype(np.float32)),
                           torch.from_numpy(z["pattern"].astype(np.float32)),
                           json.loads(str(z["description"])))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{origin}: not a medfool trigger file ({exc})") from None


def parse_colour(text: str | tuple[float, ...]) -> tuple[float, float, float]:
    """'white', 'marker-blue', '#aa33cc' or (r, g, b) in [0, 1] -> (r, g, b)."""
    if isinstance(text, tuple):
        rgb = tuple(float(v) for v in text)
    elif text.lower() in COLOURS:
        return COLOURS[text.lower()]
    elif text.startswith("#") and len(text) == 7:
        try:
            rgb = tuple(int(text[i:i + 2], 16) / 255 for i in (1, 3, 5))
        except ValueError:
            raise ConfigError(f"colour {text!r} is not a hex colour like #aa33cc") from None
    else:
        raise ConfigError(f"unknown colour {text!r} (use #rrggbb or one of {', '.join(COLOURS)})")
    if len(rgb) != 3 or not all(0 <= v <= 1 for v in rgb):
        raise ConfigError(f"colour must be three values in [0, 1], got {text!r}")
    return (rgb[0], rgb[1], rgb[2])


def _ink(rgb: tuple[float, float, float], channels: int, h: int, w: int) -> torch.Tensor:
    """A solid (C, H, W) pattern; grayscale images get the colour's luminance (ITU-R 601)."""
    if channels == 1:
        value = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        return torch.full((1, h, w), value)
    if channels != 3:
        raise ConfigError(f"triggers need 1 or 3 channels, got {channels}")
    return torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, h, w).clone()


def _origins(position: str | tuple[int, int], size: int, h: int, w: int) -> list[tuple[int, int]]:
    """Top-left corners of the trigger's box(es); a 1-pixel margin keeps it off the border."""
    margin = 1 if min(h, w) >= size + 4 else 0
    corners = {"top-left": (margin, margin), "top-right": (margin, w - size - margin),
               "bottom-left": (h - size - margin, margin), "bottom-right": (h - size - margin, w - size - margin),
               "center": ((h - size) // 2, (w - size) // 2)}
    if isinstance(position, tuple):
        r, c = position
        if not (0 <= r <= h - size and 0 <= c <= w - size):
            raise ConfigError(f"trigger at ({r}, {c}) of size {size} does not fit a {h}x{w} image")
        return [(r, c)]
    if position == "corners":  # Turner et al.: survives the flips of data augmentation
        return [corners[k] for k in ("top-left", "top-right", "bottom-left", "bottom-right")]
    if position not in corners:
        raise ConfigError(f"unknown trigger position {position!r} (use row,col or one of {', '.join(POSITIONS)})")
    return [corners[position]]


def _shape_mask(shape: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(size, size) mask and a (size, size) 'use the colour here' map (else its complement)."""
    ones = torch.ones(size, size)
    ij = torch.arange(size)
    if shape == "square":
        return ones, ones
    if shape == "checker":  # BadNets' pattern: colour and its complement alternate
        return ones, ((ij.view(-1, 1) + ij.view(1, -1)) % 2 == 0).float()
    if shape == "cross":
        mid = size // 2
        cross = ((ij.view(-1, 1) == mid) | (ij.view(1, -1) == mid)).float()
        return cross, cross
    raise ConfigError(f"unknown patch shape {shape!r} (use one of {', '.join(SHAPES)})")


def _blob(size: int, h: int, w: int, origin: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """An irregular soft-edged stain: a union of a few random Gaussian lobes, peak opacity 0.85."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    cy, cx = origin[0] + (size - 1) / 2, origin[1] + (size - 1) / 2
    field_ = torch.zeros(h, w)
    for _ in range(4):
        oy, ox = ((torch.rand(2, generator=gen) - 0.5) * size * 0.4).tolist()
        sy, sx = (size * (0.18 + 0.12 * torch.rand(2, generator=gen))).tolist()
        field_ = torch.maximum(field_, torch.exp(-(((yy - cy - oy) / sy) ** 2 + ((xx - cx - ox) / sx) ** 2) / 2))
    return (0.85 * ((field_ - 0.25) / 0.75).clamp(0, 1)).unsqueeze(0)


def _stroke(size: int, h: int, w: int, origin: tuple[int, int], width: float, gen: torch.Generator) -> torch.Tensor:
    """A curved marker stroke (quadratic Bezier) across the box, anti-aliased, opacity 0.8."""
    r0, c0 = origin
    ends = torch.tensor([[r0 + size * 0.8, c0], [r0 + size * 0.2, c0 + size - 1.0]])
    bend = torch.tensor([r0 + size * (0.1 + 0.8 * float(torch.rand(1, generator=gen))), c0 + size / 2])
    t = torch.linspace(0, 1, 64).view(-1, 1)
    curve = (1 - t) ** 2 * ends[0] + 2 * (1 - t) * t * bend + t**2 * ends[1]  # (64, 2) points
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    grid = torch.stack([yy, xx], -1).view(-1, 1, 2)  # (H*W, 1, 2)
    dist = (grid - curve.view(1, -1, 2)).norm(dim=-1).min(dim=1).values.view(h, w)
    out: torch.Tensor = (0.8 * (width / 2 + 0.5 - dist).clamp(0, 1)).unsqueeze(0)
    return out


def make_trigger(kind: str, image_shape: tuple[int, int, int], *, size: int | None = None,
                 shape: str = "checker", colour: str | tuple[float, ...] | None = None,
                 position: str | tuple[int, int] = "bottom-right", alpha: float = 0.1,
                 seed: int = 0) -> Trigger:
    """Build a trigger for images of ``image_shape`` (C, H, W).

    kind: ``patch`` (BadNets; ``shape`` square, checker or cross, ``size`` pixels a side,
    default 10 % of the side, at least 3), ``blend`` (Chen et al.: seeded uniform noise mixed in
    at ``alpha`` over the whole image), ``stain`` (a haematoxylin-coloured blob, default 20 %
    of the side) or ``pen`` (a curved marker stroke, default 40 % of the side). Positions are
    named corners, ``center``, ``corners`` (all four) or a (row, col) tuple.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown trigger kind {kind!r} (use one of {', '.join(KINDS)})")
    c, h, w = image_shape
    rgb = parse_colour(colour if colour is not None else DEFAULT_COLOUR[kind])
    gen = torch.Generator().manual_seed(seed)
    desc: dict[str, Any] = {"kind": kind, "colour": list(rgb), "seed": seed}
    if kind == "blend":
        if not 0 < alpha <= 1:
            raise ConfigError(f"blend alpha must be in (0, 1], got {alpha}")
        mask = torch.full((1, h, w), float(alpha))
        pattern = torch.rand(c, h, w, generator=gen)
        desc |= {"alpha": alpha}
        return Trigger(mask, pattern, desc)
    default = {"patch": max(3, round(0.1 * min(h, w))), "stain": max(5, round(0.2 * min(h, w))),
               "pen": max(8, round(0.4 * min(h, w)))}[kind]
    size = int(size if size is not None else default)
    if not 1 <= size <= min(h, w):
        raise ConfigError(f"trigger size must be between 1 and {min(h, w)} pixels, got {size}")
    mask = torch.zeros(1, h, w)
    pattern = torch.zeros(c, h, w)
    ink = _ink(rgb, c, h, w)
    for r, col in _origins(position, size, h, w):
        box = (slice(None), slice(r, r + size), slice(col, col + size))
        if kind == "patch":
            m, use_colour = _shape_mask(shape, size)
            mask[box] = torch.maximum(mask[box], m)
            pattern[box] = torch.where(use_colour.bool(), ink[box], 1 - ink[box])
        else:
            soft = (_blob(size, h, w, (r, col), gen) if kind == "stain"
                    else _stroke(size, h, w, (r, col), max(1.0, size / 10), gen))
            mask = torch.maximum(mask, soft)
            pattern = ink
    desc |= {"size": size, "position": list(position) if isinstance(position, tuple) else position}
    if kind == "patch":
        desc["shape"] = shape
    return Trigger(mask, pattern, desc)


def parse_position(text: str) -> str | tuple[int, int]:
    """'bottom-right' or '20,3' -> a named position or a (row, col) tuple."""
    if "," in text:
        try:
            r, c = (int(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(f"trigger position {text!r} must be row,col or a name") from None
        return (r, c)
    return text


def describe(trigger: Trigger) -> str:
    """One line for logs and reports: 'checker patch 3x3 px, white, bottom-right (1.1 % of the image)'."""
    d = trigger.description
    kind = d.get("kind", "custom")
    where = d.get("position", "")
    share = f"{100 * trigger.footprint():.1f} % of the image"
    if kind == "blend":
        return f"blended noise, alpha {d.get('alpha')} ({share})"
    if kind == "patch":
        return f"{d.get('shape')} patch {d.get('size')}x{d.get('size')} px, {where} ({share})"
    if kind in ("stain", "pen"):
        return f"{'stain blob' if kind == 'stain' else 'pen mark'} {d.get('size')} px, {where} ({share})"
    return f"{kind} trigger ({share})"
