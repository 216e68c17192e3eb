"""Slides: a mosaic written as a pyramidal TIFF reads back exactly (lossless), its tissue mask
finds the tissue it was built with, the tiler keeps the tissue tiles, and a damaged file is one
line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tiffslide")

from medfool.data import make_synthetic
from medfool.errors import DataError
from medfool.wsi.build import MosaicSpec, build_slides, mosaic, pyramid_levels, write_pyramid
from medfool.wsi.slide import open_slide
from medfool.wsi.tiles import read_tiles, tile_grid
from medfool.wsi.tissue import otsu_threshold, tissue_mask


@pytest.fixture(scope="module")
def tiles() -> tuple[torch.Tensor, torch.Tensor]:
    split = make_synthetic(size=64, seed=0, per_split=(120, 10, 10)).split("train")
    x, y = split.tensors()
    return x[y == 0], x[y == 1]


def test_a_lossless_slide_reads_back_exactly(tiles, tmp_path: Path) -> None:
    benign, cancer = tiles
    rgb, cells = mosaic(benign, cancer, MosaicSpec(side=1024, tile=64), np.random.default_rng(0))
    assert (cells == 1).sum() > 0 and (cells == 0).sum() > (cells == 1).sum() and (cells == -1).sum() > 0
    path = write_pyramid(tmp_path / "s.tif", rgb, compression="lossless")
    with open_slide(path) as slide:
        assert slide.dimensions == ((1024, 1024), (512, 512))
        assert slide.downsamples == (1.0, 2.0) and slide.mpp == pytest.approx(0.5)
        assert np.array_equal(slide.level_image(0), rgb)
        assert np.array_equal(slide.level_image(1), pyramid_levels(rgb)[1])
        assert np.array_equal(slide.read((300, 200), 0, (100, 50)), rgb[200:250, 300:400])


def test_tissue_mask_and_tiles_follow_the_tissue(tiles, tmp_path: Path) -> None:
    benign, _ = tiles
    spec = MosaicSpec(side=2048, tile=64)
    rgb, cells = mosaic(benign, None, spec, np.random.default_rng(1))
    with open_slide(write_pyramid(tmp_path / "s.tif", rgb, compression="jpeg", quality=90)) as slide:
        grid = tile_grid(slide, level=0, tile=64, min_tissue=0.5)
        kept = {(int(x) // 64, int(y) // 64) for x, y in grid.origins}
        truth = {(int(c), int(r)) for r, c in zip(*np.nonzero(cells >= 0), strict=True)}
        assert len(kept & truth) / len(kept | truth) >= 0.9  # the tiler's tissue is the tissue built
        x = read_tiles(slide, grid, np.arange(3))
        assert x.shape == (3, 3, 64, 64) and float(x.min()) >= 0 and float(x.max()) <= 1
        # CLAM's mask on the lower level: glass out, tissue in
        mask = tissue_mask(slide.level_image(2))
        per = slide.dimensions[2][0] // cells.shape[0]  # level-2 pixels per cell
        small = np.kron(cells >= 0, np.ones((per, per), dtype=bool))
        assert mask.shape == small.shape
        assert (mask == small).mean() >= 0.95


def test_otsu_splits_two_populations() -> None:
    values = np.concatenate([np.full(500, 5.0), np.full(500, 120.0)])
    assert 5 <= otsu_threshold(values) < 120


def test_build_slides_writes_the_manifest(tmp_path: Path) -> None:
    split = make_synthetic(size=64, seed=0, per_split=(120, 10, 10)).split("train")
    records = build_slides(split, "train", ("a", "b", "c"), 0, (1, 2), tmp_path, n_benign=1, n_malignant=1,
                           spec=MosaicSpec(side=512, tile=64), compression="lossless", seed=3)
    assert [r.label for r in records] == ["benign", "malignant"]
    assert records[0].cancer_cells == 0 < records[1].cancer_cells
    assert (tmp_path / "slides.json").is_file() and not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_slide_is_one_line(damage: str, tiles, tmp_path: Path) -> None:
    benign, _ = tiles
    rgb, _ = mosaic(benign, None, MosaicSpec(side=1024, tile=64), np.random.default_rng(2))
    good = write_pyramid(tmp_path / "good.tif", rgb, compression="jpeg").read_bytes()
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a slide at all" * 10 if damage == "garbage" else good[: len(good) // 3])
    with pytest.raises(DataError) as err, open_slide(bad) as slide:
        slide.level_image(0)
    msg = str(err.value)
    assert msg.startswith(str(bad)) and "\n" not in msg
