"""Tiles of a slide at a chosen level: a regular grid (tile size and stride in that level's
pixels), tiles without tissue skipped, read as model input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medfool.wsi.slide import Slide
from medfool.wsi.tissue import tissue_mask

__all__ = ["TileGrid", "read_tiles", "tile_grid"]


@dataclass(frozen=True)
class TileGrid:
    """The tiles kept: ``origins`` (N, 2) (x, y) in level-0 pixels, their tissue fraction, the
    grid's level, tile size and stride (in that level's pixels), and the mask it came from."""

    origins: np.ndarray
    tissue: np.ndarray
    level: int
    tile: int
    stride: int
    mask: np.ndarray
    mask_level: int

    def __len__(self) -> int:
        return int(self.origins.shape[0])


def tile_grid(slide: Slide, *, level: int = 0, tile: int = 64, stride: int | None = None,
              min_tissue: float = 0.25, mask_level: int | None = None, otsu: bool = True) -> TileGrid:
    """The grid's tiles whose share of tissue (CLAM's mask at ``mask_level``, by default the
    level a thumbnail of at most 1,024 px would use: CLAM segments at a low level too) is at
    least ``min_tissue``."""
    stride = stride or tile
    mlevel = slide.thumbnail_level(1024) if mask_level is None else mask_level
    mask = tissue_mask(slide.level_image(mlevel), otsu=otsu)
    ds_tile, ds_mask = slide.downsamples[level], slide.downsamples[mlevel]
    w, h = slide.dimensions[level]
    ys, xs = np.meshgrid(np.arange(0, h - tile + 1, stride), np.arange(0, w - tile + 1, stride), indexing="ij")
    origins = np.stack([xs.ravel(), ys.ravel()], axis=1) * ds_tile  # level-0 pixels
    # each tile's footprint in the mask, at least one mask pixel
    scale = ds_tile / ds_mask
    x0 = np.floor(xs.ravel() * scale).astype(int)
    y0 = np.floor(ys.ravel() * scale).astype(int)
    span = max(1, round(tile * scale))
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    x1, y1 = np.minimum(x0 + span, mask.shape[1]), np.minimum(y0 + span, mask.shape[0])
    x0, y0 = np.minimum(x0, mask.shape[1] - 1), np.minimum(y0, mask.shape[0] - 1)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    frac = inside / np.maximum((x1 - x0) * (y1 - y0), 1)
    keep = frac >= min_tissue
    return TileGrid(origins[keep].round().astype(np.int64), frac[keep], level, tile, stride, mask, mlevel)


def read_tiles(slide: Slide, grid: TileGrid, index: np.ndarray | None = None, block: int = 2048) -> torch.Tensor:
    """(N, 3, tile, tile) float32 in [0, 1]: the grid's tiles (those at ``index``), read a block
    of about ``block`` level pixels at a time (one decode per stored tile, not one per grid tile)."""
    rows = grid.origins if index is None else grid.origins[index]
    if len(rows) == 0:
        return torch.zeros(0, 3, grid.tile, grid.tile)
    ds = slide.downsamples[grid.level]
    at = np.rint(rows / ds).astype(np.int64)  # origins in this level's pixels
    out = np.empty((len(rows), grid.tile, grid.tile, 3), dtype=np.uint8)
    key = at // block
    for bx, by in np.unique(key, axis=0):
        which = np.nonzero((key[:, 0] == bx) & (key[:, 1] == by))[0]
        x0, y0 = at[which].min(axis=0)
        x1, y1 = at[which].max(axis=0) + grid.tile
        region = slide.read((round(x0 * ds), round(y0 * ds)), grid.level, (int(x1 - x0), int(y1 - y0)))
        for j in which:
            x, y = at[j] - (x0, y0)
            out[j] = region[y:y + grid.tile, x:x + grid.tile]
    return torch.from_numpy(out.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
