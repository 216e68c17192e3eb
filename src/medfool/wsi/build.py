"""Slides to work on, made from real tissue: mosaics of LC25000 lung tiles written as pyramidal
tiled TIFFs.

A slide is ``side`` x ``side`` pixels of glass (a light, slightly noisy background) with a
tissue region (a union of ellipses, leaving margins of at least a tenth of the side) tiled with
real tiles of one split: benign tiles for a benign slide; for a malignant slide, an elliptic
region of cancer tiles of one cancer class inside the benign tissue. Train and test slides are
built from the matching splits only. :func:`write_pyramid` writes any RGB image as a pyramidal
TIFF (tiles of 256 px, each level half the one before, JPEG at a stated quality or lossless
deflate) that tiffslide and OpenSlide read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from medfool.data.dataset import Split
from medfool.errors import ConfigError

__all__ = ["Compression", "MosaicSpec", "SlideRecord", "build_slides", "mosaic", "pyramid_levels", "write_pyramid"]

Compression = Literal["jpeg", "lossless"]
GLASS = (242, 241, 246)


def pyramid_levels(rgb: np.ndarray, min_side: int = 512) -> list[np.ndarray]:
    """Level 0 and each 2x box-downsampled level below it, down to a smaller side of ``min_side``."""
    levels = [rgb]
    while min(levels[-1].shape[:2]) // 2 >= min_side:
        a = levels[-1]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        levels.append(a[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8))
    return levels


def write_pyramid(path: str | Path, rgb: np.ndarray, *, compression: Compression = "jpeg", quality: int = 90,
                  tile: int = 256, mpp: float = 0.5, levels: list[np.ndarray] | None = None) -> Path:
    """``rgb`` (H, W, 3) uint8 as a pyramidal tiled TIFF at ``path`` (written to a temporary name,
    then moved: a reader never sees half a slide). ``levels`` replaces the computed lower levels
    (level 0 first), e.g. to leave them stale."""
    import tifffile

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ConfigError(f"a slide is (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
    pyramid = levels if levels is not None else pyramid_levels(rgb)
    codec: dict[str, object] = {"compression": "jpeg", "compressionargs": {"level": quality}} \
        if compression == "jpeg" else {"compression": "zlib"}
    out = Path(path)
    tmp = out.with_name(out.name + ".part")
    res = 1e4 / mpp  # pixels per centimetre
    with tifffile.TiffWriter(tmp, bigtiff=rgb.nbytes > 2**31) as tif:
        opts = {"tile": (tile, tile), "photometric": "rgb", "metadata": None, **codec}
        tif.write(pyramid[0], subifds=len(pyramid) - 1, resolution=(res, res), resolutionunit="CENTIMETER",
                  **opts)  # type: ignore[arg-type]
        for lvl in pyramid[1:]:
            tif.write(lvl, subfiletype=1, **opts)  # type: ignore[arg-type]
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class MosaicSpec:
    side: int = 4096        # pixels a side at level 0
    tile: int = 64          # pixels a side of each tissue tile
    tissue: float = 0.45    # share of the slide's area the tissue region aims at
    cancer: float = 0.12    # malignant slides: share of the tissue cells in the cancer region


def _ellipses(rng: np.random.Generator, n: int, centre_box: tuple[float, float],
              radius: tuple[float, float]) -> list[tuple[float, float, float, float, float]]:
    return [(rng.uniform(*centre_box), rng.uniform(*centre_box), rng.uniform(*radius), rng.uniform(*radius),
             rng.uniform(0, np.pi)) for _ in range(n)]


def _inside(yy: np.ndarray, xx: np.ndarray, ell: list[tuple[float, float, float, float, float]]) -> np.ndarray:
    out = np.zeros(yy.shape, dtype=bool)
    for cx, cy, a, b, t in ell:
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        out |= (u / a) ** 2 + (v / b) ** 2 <= 1
    return out


def mosaic(benign: torch.Tensor, cancer: torch.Tensor | None, spec: MosaicSpec,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(RGB (side, side, 3) uint8, cells (side/tile, side/tile) int8: -1 glass, 0 benign, 1 cancer).

    ``benign`` and ``cancer`` are (N, 3, tile, tile) tiles in [0, 1] to draw from (with
    replacement when fewer than the cells); no cancer: a benign slide."""
    n = spec.side // spec.tile
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n  # cell centres in [0, 1]
    r = float(np.sqrt(spec.tissue / np.pi))
    tissue = np.zeros((n, n), dtype=bool)
    for _ in range(50):  # a blob near the aimed area, inside the margins
        tissue = _inside(yy, xx, _ellipses(rng, int(rng.integers(2, 5)), (0.35, 0.65), (0.6 * r, 1.1 * r)))
        tissue &= (yy > 0.1) & (yy < 0.9) & (xx > 0.1) & (xx < 0.9)
        if abs(tissue.mean() - spec.tissue) < 0.1:
            break
    cells = np.where(tissue, 0, -1).astype(np.int8)
    if cancer is not None:
        ty, tx = np.nonzero(tissue)
        k = int(rng.integers(len(ty)))
        cy, cx = (ty[k] + 0.5) / n, (tx[k] + 0.5) / n
        area = spec.cancer * tissue.sum() / (n * n)
        rad = float(np.sqrt(area / np.pi))
        region = _inside(yy, xx, [(cx, cy, rad * rng.uniform(0.8, 1.25), rad * rng.uniform(0.8, 1.25),
                                   rng.uniform(0, np.pi))]) & tissue
        cells[region] = 1
    canvas = np.empty((spec.side, spec.side, 3), dtype=np.float32)
    canvas[:] = GLASS
    canvas += rng.normal(0, 1.5, canvas.shape).astype(np.float32)
    for kind, pool in ((0, benign), (1, cancer)):
        ys, xs = np.nonzero(cells == kind)
        if pool is None or len(ys) == 0:
            continue
        pick = rng.integers(pool.shape[0], size=len(ys))
        tiles = (pool[torch.from_numpy(pick)].permute(0, 2, 3, 1).numpy() * 255.0)  # (k, tile, tile, 3)
        for (y, x), t in zip(zip(ys, xs, strict=True), tiles, strict=True):
            canvas[y * spec.tile:(y + 1) * spec.tile, x * spec.tile:(x + 1) * spec.tile] = t
    return np.clip(canvas, 0, 255).round().astype(np.uint8), cells


@dataclass(frozen=True)
class SlideRecord:
    file: str
    label: str          # "benign" | "malignant"
    split: str
    cancer_class: str | None
    tissue_cells: int
    cancer_cells: int
    seed: int


def build_slides(split: Split, split_name: str, class_names: tuple[str, ...], benign_class: int,
                 cancer_classes: tuple[int, ...], out: Path, *, n_benign: int, n_malignant: int,
                 spec: MosaicSpec = MosaicSpec(), compression: Compression = "jpeg", quality: int = 90,
                 seed: int = 0) -> list[SlideRecord]:
    """Write ``n_benign`` benign and ``n_malignant`` malignant mosaic slides of ``split`` (tiles of
    ``spec.tile`` px) into ``out``, with ``slides.json`` listing them (and each slide's cell map)."""
    x, y = split.tensors()
    if x.shape[-1] != spec.tile:
        raise ConfigError(f"the tiles are {x.shape[-1]} px; this mosaic takes {spec.tile} px tiles")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    benign = x[y == benign_class]
    records, cell_maps = [], {}
    for i in range(n_benign + n_malignant):
        malignant = i >= n_benign
        cls = int(rng.choice(cancer_classes)) if malignant else None
        rgb, cells = mosaic(benign, x[y == cls] if cls is not None else None, spec, rng)
        name = f"{split_name}_{i:03d}_{'malignant' if malignant else 'benign'}.tif"
        write_pyramid(out / name, rgb, compression=compression, quality=quality)
        records.append(SlideRecord(name, "malignant" if malignant else "benign", split_name,
                                   class_names[cls] if cls is not None else None, int((cells >= 0).sum()),
                                   int((cells == 1).sum()), seed))
        cell_maps[name] = cells.tolist()
    manifest = {"slides": [asdict(r) for r in records], "tile": spec.tile, "side": spec.side,
                "compression": compression, "quality": quality if compression == "jpeg" else None,
                "cells": cell_maps}
    tmp = out / "slides.json.part"
    tmp.write_text(json.dumps(manifest))
    tmp.replace(out / "slides.json")
    return records
