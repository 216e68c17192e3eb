"""Writing an attack into a slide, and the check a hospital can run for it.

:func:`write_back` copies a slide with level 0 changed (pixels set at level-0 coordinates),
either leaving the lower levels as they were (``rewrite_levels=False``: what a pixel edit of
the full-resolution image leaves behind) or computing them again from the new level 0 (an
attacker who rewrites every level), in the source's compression.

:func:`pyramid_consistency` compares each level with the box-downsampled level above it, tile
by tile: an honest pyramid differs only by the resampling and the codec; a level 0 edited after
the pyramid was made leaves its lower levels stale where it changed. The score is the largest
mean absolute difference (0-255) over tiles of ``tile`` pixels of the lower level (``tile=1``:
the largest single pixel's, the sharpest for lossless slides; larger tiles average a lossy
codec's noise away).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfool.errors import ConfigError
from medfool.wsi.build import Compression, pyramid_levels, write_pyramid
from medfool.wsi.slide import Slide, open_slide

__all__ = ["SlideEdit", "consistency_scores", "downsample2", "pyramid_consistency", "write_back"]


@dataclass(frozen=True)
class SlideEdit:
    """Pixels to write at level 0: ``pixels`` (h, w, 3) uint8 with its top-left corner at (x, y)."""

    x: int
    y: int
    pixels: np.ndarray

    @staticmethod
    def points(points: np.ndarray, colours: np.ndarray) -> list[SlideEdit]:
        """Single pixels: ``points`` (N, 2) (x, y) set to ``colours`` (N, 3) uint8."""
        pts = np.asarray(points, dtype=np.int64).reshape(-1, 2)
        cols = np.asarray(colours, dtype=np.uint8).reshape(-1, 1, 1, 3)
        return [SlideEdit(int(x), int(y), c) for (x, y), c in zip(pts, cols, strict=True)]


def downsample2(rgb: np.ndarray, factor: int = 2) -> np.ndarray:
    """``factor`` x box downsampling of (H, W, 3) uint8 (edges that do not fill a box dropped), as
    the pyramids here are made (2x per level; SVS files often step 4x)."""
    h, w = rgb.shape[0] // factor * factor, rgb.shape[1] // factor * factor
    out: np.ndarray = rgb[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).astype(np.float32) \
        .mean(axis=(1, 3))
    return out


def consistency_scores(slide: Slide, tiles: tuple[int, ...] = (1, 4, 32)) -> dict[str, float]:
    """For each tile size (the key, as text, as JSON keeps it): the largest tile-wise mean
    |level L - downsample(level L-1)| (0-255, the channels' mean) over the pyramid's levels.
    Reads whole levels: level 0 of a gigapixel slide needs its width x height x 3 bytes."""
    worst = dict.fromkeys(tiles, 0.0)
    above = slide.level_image(0)
    for level in range(1, slide.level_count):
        ratio = slide.downsamples[level] / slide.downsamples[level - 1]
        if abs(ratio - round(ratio)) > 0.01 or round(ratio) < 2:
            raise ConfigError(f"{slide.path}: level {level} is {ratio:.3g}x level {level - 1}; the pyramid check "
                              "needs whole-number steps")
        below = slide.level_image(level).astype(np.float32)
        expected = downsample2(above, round(ratio))
        h, w = min(below.shape[0], expected.shape[0]), min(below.shape[1], expected.shape[1])
        diff = np.abs(below[:h, :w] - expected[:h, :w]).mean(axis=2)
        for tile in tiles:
            th, tw = h // tile, w // tile
            if th and tw:
                per_tile = diff[: th * tile, : tw * tile].reshape(th, tile, tw, tile).mean(axis=(1, 3))
                worst[tile] = max(worst[tile], float(per_tile.max()))
        above = below.round().astype(np.uint8)
    return {str(t): v for t, v in worst.items()}


def pyramid_consistency(slide: Slide, tile: int = 32) -> float:
    """The largest tile-wise mean |level L - downsample(level L-1)| over the pyramid's levels."""
    return consistency_scores(slide, (tile,))[str(tile)]


def write_back(source: Path, target: Path, edits: Sequence[SlideEdit], *, compression: Compression,
               quality: int = 90, rewrite_levels: bool = False) -> Path:
    """A copy of ``source`` at ``target`` with ``edits`` written into level 0; the lower levels
    stale (as the source had them), or rewritten from the new level 0."""
    with open_slide(source) as slide:
        levels = [slide.level_image(level) for level in range(slide.level_count)]
        mpp = slide.mpp or 0.5
    level0 = levels[0].copy()
    for e in edits:
        h, w = e.pixels.shape[:2]
        if not (e.x >= 0 and e.y >= 0 and e.x + w <= level0.shape[1] and e.y + h <= level0.shape[0]):
            raise ConfigError(f"{source}: an edit at ({e.x}, {e.y}) of {w}x{h} px lies outside level 0")
        level0[e.y:e.y + h, e.x:e.x + w] = e.pixels
    pyramid = pyramid_levels(level0, min_side=min(levels[-1].shape[:2])) if rewrite_levels else [level0, *levels[1:]]
    return write_pyramid(target, level0, compression=compression, quality=quality, mpp=mpp, levels=pyramid)
