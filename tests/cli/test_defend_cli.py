"""``medfool defend``: every subcommand explains itself, writes models the rest of medfool
takes, and refuses bad input with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medfool.cli.main import main
from medfool.defences.robust_training import RobustObjective
from medfool.models import load_classifier, save_checkpoint

DEFEND = ["adv-train", "transform", "ensemble", "evaluate", "detector", "certify"]


@pytest.mark.parametrize("sub", DEFEND)
def test_help(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["defend", sub, "--help"]) == 0
    assert f"usage: medfool defend {sub}" in capsys.readouterr().out


def test_transform_and_ensemble_write_models_every_command_takes(tiny_model: Path, tmp_path: Path) -> None:
    jpeg = tmp_path / "jpeg.safetensors"
    assert main(["defend", "transform", "-m", str(tiny_model), "-t", "jpeg:quality=60", "-t", "median",
                 "-o", str(jpeg)]) == 0
    model, _ = load_classifier(jpeg)
    assert [s["name"] for s in model.meta.preprocess] == ["jpeg", "median"]
    ens = tmp_path / "ens.safetensors"
    assert main(["defend", "ensemble", "-m", str(tiny_model), "-m", str(jpeg), "--combine", "vote",
                 "-o", str(ens)]) == 0
    assert main(["evaluate", "-m", str(ens), "-d", "synthetic"]) == 0
    out = tmp_path / "attack"
    assert main(["attack", "fgsm", "-m", str(ens), "-d", "synthetic", "--n", "8", "--out", str(out)]) == 0


def test_evaluate_resumes_and_reports_side_by_side(tiny_model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    argv = ["defend", "evaluate", "--baseline", str(tiny_model), "-t", "bit-depth:bits=2", "-d", "synthetic",
            "--n", "8", "--eps", "64/255", "--eot", "2", "-o", str(out)]
    assert main(argv) == 0
    first = json.loads((out / "defence.json").read_text())
    item = first["defences"][0]
    row = item["rows"][0]
    assert item["name"] == "bit-depth bits=2" and row["eps_255"] == 64
    assert row["adaptive"] <= min(row["naive"], row["masking_check"])
    # every robust accuracy with its classes, its interval and the constant answer's line
    adaptive = row["breakdown"]["adaptive"]
    assert adaptive["accuracy"] == row["adaptive"] and adaptive["n"] == 8
    assert sum(c["n"] for c in adaptive["per_class"].values()) == 8
    assert adaptive["ci95"][0] <= row["adaptive"] <= adaptive["ci95"][1]
    assert 0 < adaptive["constant"] <= 1 and "balanced" in adaptive
    # the defended model's gradient-masking checks ran: bit depth zeroes the deployed gradient
    checks = {c["check"]: c["status"] for c in item["checks"]}
    assert checks["non-zero gradients"] == "warn"
    assert first["settings"]["preset"] == "standard"  # the figure to sign: AutoAttack's own budgets
    capsys.readouterr()
    assert main(argv) == 0  # a rerun reuses every finished unit
    assert "naive, masking-check" not in capsys.readouterr().err
    assert json.loads((out / "defence.json").read_text())["defences"] == first["defences"]


@pytest.mark.parametrize(("argv", "pattern"), [
    (["defend", "transform", "-m", "{model}", "-t", "jpg", "-o", "{tmp}/d.safetensors"], "unknown input transform"),
    (["defend", "transform", "-m", "{model}", "-t", "median:size=4", "-o", "{tmp}/d.safetensors"],
     "size must be odd"),
    (["defend", "transform", "-m", "{model}", "-t", "jpeg", "-o", "{tmp}/d.onnx"], r"must end in \.safetensors"),
    (["defend", "ensemble", "-m", "{model}", "-o", "{tmp}/e.safetensors"], "at least two models"),
    (["defend", "evaluate", "-d", "synthetic", "-o", "{tmp}/e"], "name at least one defence"),
    (["defend", "evaluate", "-t", "jpeg", "-d", "synthetic", "-o", "{tmp}/e"], "give --baseline"),
    (["defend", "certify", "-m", "{model}", "-d", "synthetic", "-o", "{tmp}/c"], "give --sigma"),
    (["defend", "adv-train", "-d", "synthetic", "--eps", "2", "-o", "{tmp}/t"], "epsilon must be"),
])
def test_bad_input_is_one_line(tiny_model: Path, tmp_path: Path, fails_cleanly, argv: list[str],
                               pattern: str) -> None:
    fails_cleanly([a.format(model=tiny_model, tmp=tmp_path) for a in argv], pattern)


def test_adv_train_logs_robust_accuracy_per_epoch(tmp_path: Path) -> None:
    out = tmp_path / "adv"
    assert main(["defend", "adv-train", "-d", "synthetic", "--method", "fgsm-rs", "--epochs", "2", "--val-images",
                 "32", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["objective"]["method"] == "fgsm-rs"
    assert all("val_robust_accuracy" in row for row in record["history"])
    model, _ = load_classifier(out / "model.safetensors")
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 3)


def _with_objective(tiny_model: Path, tmp_path: Path, method: str, sigma: float) -> Path:
    """The tiny model saved again with the record robust training writes for ``method``."""
    model, _ = load_classifier(tiny_model)
    path = tmp_path / f"{method}.safetensors"
    save_checkpoint(model, path, {"dataset": "synthetic",
                                  "objective": RobustObjective(method=method, sigma=sigma).describe()})
    return path


def test_certify_refuses_a_model_not_trained_with_noise_unless_sigma_is_given(
        tiny_model: Path, tmp_path: Path, fails_cleanly) -> None:
    # a PGD-trained model's record carries the objective's (unused) default sigma: it must not be taken
    pgd = _with_objective(tiny_model, tmp_path, "pgd", 0.25)
    argv = ["defend", "certify", "-m", str(pgd), "-d", "synthetic", "--n", "2", "--n0", "4", "--samples", "8"]
    fails_cleanly([*argv, "-o", str(tmp_path / "c")], r"not trained with Gaussian noise.*give --sigma",
                  out=tmp_path / "c")
    assert main([*argv, "--sigma", "0.3", "-o", str(tmp_path / "given")]) == 0
    assert json.loads((tmp_path / "given" / "certify.json").read_text())["settings"]["sigma"] == 0.3


def test_certify_takes_sigma_from_a_noise_trained_model(tiny_model: Path, tmp_path: Path) -> None:
    noise = _with_objective(tiny_model, tmp_path, "noise", 0.5)
    assert main(["defend", "certify", "-m", str(noise), "-d", "synthetic", "--n", "2", "--n0", "4", "--samples", "8",
                 "-o", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "certify.json").read_text())["settings"]["sigma"] == 0.5


def test_eot_help_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["defend", "adv-train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    eot = text[text.index("--eot ") + len("--eot "):text.index("--val-images VAL_IMAGES ")]
    for words in ("H&E stain", "before crafting", "RGB", "grayscale"):
        assert words in eot, eot


def test_eot_is_refused_where_it_would_do_nothing(make_npz, tmp_path: Path, fails_cleanly) -> None:
    grey = make_npz("grey.npz", channels=1, size=28, n=32, classes=2)
    fails_cleanly(["defend", "adv-train", "-d", str(grey), "--eot", "--epochs", "1", "--out", str(tmp_path / "a")],
                  r"--eot jitters H&E stains.*1 channel", out=tmp_path / "a")
    fails_cleanly(["defend", "adv-train", "-d", "synthetic", "--eot", "--method", "noise", "--epochs", "1",
                   "--out", str(tmp_path / "b")], r"--eot.*--method noise crafts nothing", out=tmp_path / "b")


@pytest.mark.parametrize("sub", ["detector", "evaluate", "certify"])
def test_a_dataset_without_a_test_split_is_refused_before_anything_is_written(
        sub: str, tiny_model: Path, tmp_path: Path, fails_cleanly) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for c in ("pattern_0", "pattern_1", "pattern_2"):  # what the tiny model classifies
            (tmp_path / "tiles" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (28, 28), (60 * i, 0, 0)).save(tmp_path / "tiles" / split / c / f"{i}.png")
    extra = {"evaluate": ["-t", "median", "--eot", "1"], "certify": ["--sigma", "0.25", "--samples", "8"],
             "detector": ["--steps", "2"]}[sub]
    model = ["--baseline"] if sub == "evaluate" else ["-m"]
    fails_cleanly(["defend", sub, *model, str(tiny_model), *extra, "-d", str(tmp_path / "tiles"),
                   "-o", str(tmp_path / "o")], r"tiles has no test split", out=tmp_path / "o")


def test_adv_train_without_a_test_split_names_the_validation_accuracy(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for k, c in enumerate(("a", "b")):
            (tmp_path / "tiles" / split / c).mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (28, 28), (200 * k, 20 * i, 0)).save(tmp_path / "tiles" / split / c / f"{i}.png")
    assert main(["defend", "adv-train", "-d", str(tmp_path / "tiles"), "--method", "fgsm-rs", "--epochs", "1",
                 "--val-images", "4", "--out", str(tmp_path / "adv")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("val (no test split; it selected the epoch) accuracy"), last
