"""Write-back and the pyramid-consistency check: a lossless write-back keeps the changed pixels
exactly; a level 0 edited with stale lower levels scores far above an honest pyramid, and one
whose levels were all rewritten does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tiffslide")

from medfool.data import make_synthetic
from medfool.wsi.build import MosaicSpec, mosaic, write_pyramid
from medfool.wsi.forensics import SlideEdit, pyramid_consistency, write_back
from medfool.wsi.slide import open_slide


def test_write_back_and_consistency(tmp_path: Path) -> None:
    x, y = make_synthetic(size=64, seed=0, per_split=(60, 5, 5)).split("train").tensors()
    rgb, cells = mosaic(x[y == 0], None, MosaicSpec(side=1024, tile=64), np.random.default_rng(0))
    clean = write_pyramid(tmp_path / "clean.tif", rgb, compression="lossless")
    rows, cols = np.nonzero(cells >= 0)
    pts = np.stack([cols[:40] * 64 + 10, rows[:40] * 64 + 20], axis=1)  # 40 pixels in tissue tiles
    colours = np.tile(np.array([[0, 255, 0]], dtype=np.uint8), (40, 1))
    edits = SlideEdit.points(pts, colours)
    stale = write_back(clean, tmp_path / "stale.tif", edits, compression="lossless")
    fresh = write_back(clean, tmp_path / "fresh.tif", edits, compression="lossless", rewrite_levels=True)
    with open_slide(stale) as s:
        level0 = s.level_image(0)
        assert np.array_equal(level0[pts[:, 1], pts[:, 0]], colours)  # lossless: survives exactly
        stale_score, stale_tiles = pyramid_consistency(s, tile=1), pyramid_consistency(s, tile=4)
    with open_slide(clean) as s:
        clean_score, clean_tiles = pyramid_consistency(s, tile=1), pyramid_consistency(s, tile=4)
    with open_slide(fresh) as s:
        fresh_score = pyramid_consistency(s, tile=1)
    assert clean_score <= 0.5 and fresh_score <= 0.5  # an honest pyramid: rounding only
    assert stale_score > 20  # one green pixel moves its level-1 pixel by a quarter of its change
    assert stale_tiles > 4 * clean_tiles
