"""``medfool wsi train --aggregator max`` chooses an operating threshold on training slides, and
``medfool wsi audit`` writes one report from per-slide records it resumes from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tiffslide")

from medfool.wsi.aggregate import calibrate_threshold
from medfool.wsi.build import MosaicSpec, build_slides


def test_the_threshold_separates_the_training_slides_by_the_widest_gap() -> None:
    # benign slides at 0.70-0.77 (one misread tile each), malignant at 0.99-1.0: the cut falls
    # in the middle of the gap between 0.77 and 0.99
    probs = [0.70, 0.74, 0.77, 0.99, 1.0, 1.0]
    assert calibrate_threshold(probs, [0, 0, 0, 1, 1, 1]) == pytest.approx(0.88)
    # overlapping classes: the best balanced accuracy wins (3 of 4 each side at 0.55)
    probs = [0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.8, 0.9]
    t = calibrate_threshold(probs, [0, 0, 0, 0, 1, 1, 1, 1])
    assert 0.3 < t < 0.7
    with pytest.raises(Exception, match="benign and malignant"):
        calibrate_threshold([0.1, 0.2], [0, 0])


@pytest.mark.slow
def test_wsi_train_max_then_audit(tile_model, tmp_path: Path, fails_cleanly) -> None:
    from medfool.cli.main import main

    path, ds = tile_model
    for split, folder, seed in (("train", "tr", 1), ("test", "te", 2)):
        build_slides(ds.split(split), split, ds.info.class_names, 0, (1, 2), tmp_path / folder, n_benign=2,
                     n_malignant=2, spec=MosaicSpec(side=512, tile=64, cancer=0.3), compression="jpeg", seed=seed)
    sm = tmp_path / "sm"
    assert main(["wsi", "train", str(tmp_path / "tr"), "-m", str(path), "--aggregator", "max", "--val",
                 str(tmp_path / "te"), "--out", str(sm), "--device", "cpu"]) == 0
    metrics = json.loads((sm / "metrics.json").read_text())
    spec = json.loads((sm / "slide_model.json").read_text())
    assert spec["aggregator"] == "max" and spec["threshold"] == metrics["threshold"]
    assert metrics["train_accuracy"] >= 0.75 and not (sm / "attention.safetensors").exists()
    out = tmp_path / "audit"
    argv = ["wsi", "audit", str(tmp_path / "te"), "-m", str(sm), "--attacks", "pixels:1,patch:48,fraction:0.1",
            "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["threshold"] == spec["threshold"]  # the slide model's own operating point
    assert len(results["slides"]) == 4
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 4 and "Forensics: pyramid consistency" in page and "<script" not in page
    won = [a for rec in results["slides"] for a in rec["attacks"] if a["success"]]
    assert won and all("written" in a for a in won)  # every success was read back from a written file
    # a rerun resumes from the per-slide records instead of attacking again
    done = sorted((out / "slides").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in done]
    assert main(argv) == 0
    assert [p.stat().st_mtime_ns for p in done] == stamps
    # a changed slide file is audited again; a damaged record counts as none
    slide = tmp_path / "te" / "test_000_benign.tif"
    slide.write_bytes(slide.read_bytes())
    done[1].write_text("{not json")
    assert main(argv) == 0
    now = [p.stat().st_mtime_ns for p in done]
    assert now[0] != stamps[0] and now[1] != stamps[1] and now[2:] == stamps[2:]
    for bad in ("pixels:x", "pixels:0", "fraction:7", "patch:-3"):
        fails_cleanly(["wsi", "audit", str(tmp_path / "te"), "-m", str(sm), "--attacks", bad,
                       "--out", str(tmp_path / "o2")], f"--attacks: '{bad}'", out=tmp_path / "o2")
    fails_cleanly(["wsi", "audit", str(tmp_path / "te"), "-m", str(sm), "--attacks", "patch:999",
                   "--out", str(tmp_path / "o2")], "a patch of 1 to 64 px", out=tmp_path / "o2")
    fails_cleanly(["wsi", "audit", str(tmp_path / "nowhere"), "-m", str(sm), "--out", str(tmp_path / "o2")],
                  "not a folder of slides", out=tmp_path / "o2")


def test_wsi_build_from_the_command_line(real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfool.cli.main import main

    monkeypatch.setenv("MEDFOOL_DATA_DIR", str(real_data))

    out = tmp_path / "slides"
    assert main(["wsi", "build", "-d", "lc25000_lung", "--size", "64", "--no-download", "--split", "val",
                 "--benign", "1", "--malignant", "1", "--side", "512", "--seed", "3", "--out", str(out)]) == 0
    manifest = json.loads((out / "slides.json").read_text())
    assert [s["label"] for s in manifest["slides"]] == ["benign", "malignant"]
    assert {s["seed"] for s in manifest["slides"]} == {3} and manifest["tile"] == 64


@pytest.mark.parametrize("sub", ["build", "train", "predict", "attack", "audit"])
def test_every_wsi_subcommand_explains_itself(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    from medfool.cli.main import main

    assert main(["wsi", sub, "--help"]) == 0
    assert f"usage: medfool wsi {sub}" in capsys.readouterr().out
