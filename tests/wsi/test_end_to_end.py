"""A 4,096 px slide through the command line: predict, a one-pixel attack, write-back and the
re-read from the written file, in under a minute on two cores; a damaged slide is one line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tiffslide")

from medfool.wsi.build import MosaicSpec, build_slides
from medfool.wsi.slide import open_slide


@pytest.mark.slow
def test_predict_attack_and_write_back_of_a_4096_px_slide_in_a_minute(tile_model, tmp_path: Path,
                                                                      fails_cleanly) -> None:
    from medfool.cli.main import main

    path, ds = tile_model
    start = time.perf_counter()
    build_slides(ds.split("test"), "test", ds.info.class_names, 0, (1, 2), tmp_path / "slides", n_benign=1,
                 n_malignant=0, spec=MosaicSpec(side=4096, tile=64), compression="jpeg", quality=90, seed=0)
    slide = tmp_path / "slides" / "test_000_benign.tif"
    assert main(["wsi", "predict", str(slide), "-m", str(path), "--out", str(tmp_path / "p"), "--device", "cpu"]) == 0
    p = json.loads((tmp_path / "p" / "prediction.json").read_text())["probability_malignant"]
    # an operating point just above the slide's reading: the small synthetic tile model moves little per pixel
    threshold = min(p + 2e-4, 1.0)  # one pixel reaches about +6e-4 here: a margin for other CPUs
    out = tmp_path / "a"
    assert main(["wsi", "attack", str(slide), "-m", str(path), "--out", str(out), "--pixels", "1",
                 "--threshold", f"{threshold}", "--population", "40", "--generations", "3", "--max-tiles", "3",
                 "--device", "cpu"]) == 0
    elapsed = time.perf_counter() - start
    result = json.loads((out / "result.json").read_text())
    assert result["success"] and result["pixels_changed"] == 1, result
    lossless = result["written"]["lossless"]
    assert lossless["fooled"] and lossless["probability"] >= threshold  # judged from the written file
    with open_slide(slide) as s, open_slide(out / lossless["file"]) as a:
        changed = (s.level_image(0) != a.level_image(0)).any(axis=2)
        assert int(changed.sum()) == 1  # exactly the one pixel, at level 0
        lower_same = np.array_equal(s.level_image(1), a.level_image(1))
    assert lower_same  # the lower levels are the source's: stale
    assert (out / "before.png").is_file() and (out / "after.png").is_file()
    assert elapsed < 60, f"end to end took {elapsed:.0f} s"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_slide_stops_the_attack_with_one_line(damage: str, tile_model, tmp_path: Path,
                                                        fails_cleanly) -> None:
    path, ds = tile_model
    build_slides(ds.split("test"), "test", ds.info.class_names, 0, (1, 2), tmp_path / "s", n_benign=1,
                 n_malignant=0, spec=MosaicSpec(side=1024, tile=64), compression="jpeg", seed=0)
    good = (tmp_path / "s" / "test_000_benign.tif").read_bytes()
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all" * 50 if damage == "garbage" else good[: len(good) // 2])
    fails_cleanly(["wsi", "attack", str(bad), "-m", str(path), "--out", str(tmp_path / "o")],
                  r"bad\.tif: (not a readable slide|cannot read)", out=tmp_path / "o")
