"""``medfool attack``: outputs, budgets, targets, and clean failures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfool.cli.main import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    assert main(["train", "-d", "synthetic", "--epochs", "3", "--width", "8", "--out", str(out)]) == 0
    return str(out / "model.safetensors")


def test_attack_writes_results_examples_and_grid(ckpt, tmp_path, capsys):
    out = tmp_path / "a"
    code = main(["attack", "pgd", "-m", ckpt, "-d", "synthetic", "--eps", "2/255", "16/255", "--steps", "5",
                 "--n", "40", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "eps 2/255" in text and "eps 16/255" in text
    res = json.loads((out / "results.json").read_text())
    assert [s["eps_255"] for s in res["summaries"]] == [2.0, 16.0]
    assert res["seed"] == 0 and "torch" in res["environment"]
    assert res["summaries"][1]["success_rate"] >= res["summaries"][0]["success_rate"]
    with np.load(out / "adversarial.npz") as z:
        assert z["clean"].shape == (40, 3, 28, 28) == z["adversarial_1"].shape
        assert np.abs(z["adversarial_1"] - z["clean"]).max() <= 16 / 255 + 1e-6
        assert len(res["images"]) == 80 and z["success_1"].sum() == sum(
            r["success"] for r in res["images"] if r["eps"] == 16 / 255)
    assert (out / "grid.png").stat().st_size > 1000


def test_targeted_attack_skips_images_of_the_target(ckpt, tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["attack", "fgsm", "-m", ckpt, "-d", "synthetic", "--eps", "32/255", "--target", "pattern_2",
                 "--only-class", "pattern_0", "--n", "10", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert all(r["label"] == 0 for r in res["images"]) and len(res["images"]) == 10


@pytest.mark.parametrize(("argv", "pattern"), [
    (["attack", "pgf"], "unknown attack 'pgf'; did you mean 'pgd'"),
    (["attack", "pgd", "--steps", "0"], "steps must be an integer >= 1, got 0"),
    (["attack", "pgd", "-o", "kapa=1"], "pgd has no option kapa"),
    (["attack", "cw", "--target", "nodule"], "unknown class 'nodule'"),
])
def test_attack_user_errors(ckpt, tmp_path, capsys, argv, pattern):
    argv = [*argv, "-m", ckpt, "-d", "synthetic", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("medfool: error:") and pattern in err[-1]
    assert not (tmp_path / "x").exists()


def test_bad_epsilon_is_an_argparse_error(ckpt, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "pgd", "-m", ckpt, "-d", "synthetic", "--eps", "3"])
    assert exc.value.code == 2
    assert "epsilon must be in [0, 1], got 3" in capsys.readouterr().err


def test_uap_is_crafted_on_train_and_measured_on_test(ckpt, tmp_path, capsys):
    out = tmp_path / "u"
    assert main(["attack", "uap", "-m", ckpt, "-d", "synthetic", "--eps", "16/255", "-o", "passes=2",
                 "--n-craft", "100", "--n", "30", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "crafting on 100 train images" in text and "held-out fooling rate" in text
    res = json.loads((out / "results.json").read_text())
    assert res["summaries"][0]["attack"] == "uap"
    with np.load(out / "adversarial.npz") as z:
        delta = z["adversarial_0"] - z["clean"]
        assert np.abs(delta).max() <= 16 / 255 + 1e-6
        assert z["perturbation_0"].shape == (1, 3, 28, 28)
