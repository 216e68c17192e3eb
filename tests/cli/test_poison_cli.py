"""``medfool poison backdoor|availability`` end to end on the synthetic set, and their user errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfool.cli.main import main

FAST = ["-d", "synthetic", "--epochs", "2", "--seed", "0"]


@pytest.mark.slow
def test_backdoor_command_writes_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bd"
    assert main(["poison", "backdoor", *FAST, "--trigger", "stain", "--rate", "0.1", "--detect", "ac,spectral",
                 "--retrain", "ac", "--sweep", "0.05,10%", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "poisoned model (30 of 300 training images)" in said and "sweep 10.0%" in said
    data = json.loads((out / "results.json").read_text())
    assert data["seed"] == 0 and data["environment"]["torch"] and data["command"]["trigger"] == "stain"
    assert data["trigger"]["kind"] == "stain" and data["backdoor"]["target"] == 0  # auto: first non-critical
    assert set(data["detection"]) == {"activation-clustering", "spectral-signatures"}
    assert [r["rate"] for r in data["sweep"]] == [0.05, 0.1]
    for name in ("trigger.png", "trigger.npz", "sweep.png", "poisoned_train.npz", "clean/model.safetensors",
                 "poisoned/model.safetensors", "retrain-activation-clustering/model.safetensors"):
        assert (out / name).is_file(), name
    with np.load(out / "poisoned_train.npz", allow_pickle=False) as z:
        assert int(z["poisoned"].sum()) == 30


@pytest.mark.slow
def test_availability_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "av"
    assert main(["poison", "availability", *FAST, "--method", "label-flip", "--rates", "0.2,50%",
                 "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert [r["rate"] for r in data["curve"]] == [0.0, 0.2, 0.5]
    assert [r["n_poisoned"] for r in data["curve"]] == [0, 60, 150]
    curve = data["curve"]
    assert curve[2]["accuracy_drop"] == pytest.approx(curve[0]["accuracy"] - curve[2]["accuracy"])
    assert (out / "accuracy.png").is_file()


@pytest.mark.parametrize(("argv", "pattern"), [
    (["backdoor", "--rate", "0"], "poison rate must be a fraction"),
    (["backdoor", "--rate", "0.001"], "is no image"),
    (["backdoor", "--target", "tumour"], "unknown class 'tumour'"),
    (["backdoor", "--trigger-size", "99"], "trigger size must be between"),
    (["backdoor", "--colour", "ultraviolet"], "unknown colour"),
    (["backdoor", "--position", "9,x"], "must be row,col"),
    (["backdoor", "--all-to-all", "--clean-label"], "clean-label backdoor is all-to-one"),
    (["availability", "--rates", "1.5"], "poison rates must be in"),
])
def test_user_errors_are_one_line(argv: list[str], pattern: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    code = main(["poison", argv[0], "-d", "synthetic", *argv[1:], "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("medfool: error: ") and pattern in err[-1], err
    assert "Traceback" not in "\n".join(err)


def test_unknown_detector_is_an_argument_error(fails_cleanly) -> None:
    fails_cleanly(["poison", "backdoor", "-d", "synthetic", "--detect", "magic"], "unknown name 'magic'")
