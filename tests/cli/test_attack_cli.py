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
    (["attack", "pgd", "--steps", "0"], "argument --steps: must be >= 1, got 0"),
    (["attack", "pgd", "-o", "kapa=1"], "pgd has no option kapa"),
    (["attack", "cw", "--target", "nodule"], "unknown class 'nodule'"),
])
def test_attack_user_errors(ckpt, tmp_path, capsys, argv, pattern):
    argv = [*argv, "-m", ckpt, "-d", "synthetic", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("medfool: error:") and pattern in err[-1]
    assert not (tmp_path / "x").exists()


def test_bad_epsilon_is_an_argparse_error(ckpt, fails_cleanly):
    fails_cleanly(["attack", "pgd", "-m", ckpt, "-d", "synthetic", "--eps", "3"], r"epsilon must be in \[0, 1\], got 3")


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


@pytest.mark.slow
def test_patch_crafts_on_train_measures_on_test_and_resumes(ckpt, tmp_path, capsys):
    surrogate = tmp_path / "s"
    assert main(["train", "-d", "synthetic", "--epochs", "3", "--width", "8", "--seed", "1",
                 "--out", str(surrogate)]) == 0
    out = tmp_path / "p"
    argv = ["attack", "patch", "-m", ckpt, "-d", "synthetic", "--target", "pattern_2", "--steps", "20",
            "--n-craft", "120", "--n", "30", "--surrogate", str(surrogate / "model.safetensors"),
            "--sweep", "0.05", "0.2", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "20 steps on 120 train images; measured on the 30 test images" in text
    res = json.loads((out / "results.json").read_text())
    summary = res["summary"]
    assert set(summary) == {"patch", "natural-patch", "natural-patch-control", "transfer"}
    assert 0 <= summary["transfer"]["victim_success"] <= 1 and 0 <= summary["transfer"]["surrogate_success"] <= 1
    assert [r["area"] for r in res["sweep"]] == [0.05, 0.2]
    assert all(r["label"] != 2 for r in res["images"]) and len(res["images"]) == 30
    with np.load(out / "adversarial.npz") as z:
        changed = np.abs(z["adversarial"] - z["clean"]).max(axis=1) > 0
        assert not changed[z["mask"][:, 0] == 0].any()  # nothing outside the pasted patch moved
    for name in ("patch.png", "surrogate_patch.png", "sweep.png", "grid.png"):
        assert (out / name).stat().st_size > 200
    # same command again: the patches and sweep rows are read back, the numbers are the same
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.count("reusing") == 3 and "sweep: reusing 2 area(s)" in text
    assert json.loads((out / "results.json").read_text())["summary"] == summary
    # a different setting crafts again
    assert main([*argv[:-2], "-o", "lr=0.2", "--out", str(out)]) == 0
    assert "reusing" not in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "pattern"), [
    (["attack", "patch", "--eps", "8/255"], "a patch has no epsilon: its budget is its area"),
    (["attack", "patch", "--target", "least-likely"], "a patch needs one target class"),
    (["attack", "pgd", "--sweep"], "--sweep of patch"),
    (["attack", "patch", "--sweep"], "--sweep needs --target"),
    (["attack", "patch", "-o", "area=0.0001"], "less than one pixel"),
    (["attack", "patch", "-o", "region=outside", "-o", "box=1,2"], "box must be (top, left, bottom, right)"),
])
def test_patch_user_errors(ckpt, tmp_path, capsys, argv, pattern):
    argv = [*argv, "-m", ckpt, "-d", "synthetic", "--steps", "2", "--n", "4", "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("medfool: error:") and pattern in err[-1]


def test_patch_kept_outside_a_region_of_interest(ckpt, tmp_path):
    out = tmp_path / "roi"
    assert main(["attack", "patch", "-m", ckpt, "-d", "synthetic", "--target", "1", "--steps", "5", "--n", "20",
                 "--n-craft", "50", "-o", "region=outside", "-o", "box=8,8,20,20", "--out", str(out)]) == 0
    with np.load(out / "adversarial.npz") as z:
        assert z["mask"][:, 0].sum(axis=(1, 2)).min() > 0
        assert z["mask"][:, 0, 8:20, 8:20].sum() == 0


def test_analyze_pixel_map_writes_maps(ckpt, tmp_path, capsys):
    out = tmp_path / "pm"
    assert main(["analyze", "pixel-map", "-m", ckpt, "-d", "synthetic", "--n", "1", "--samples", "2",
                 "--out", str(out)]) == 0
    res = json.loads((out / "pixel_map.json").read_text())
    row = res["images"][0]
    assert len(row["drop"]) == 28 and len(row["drop"][0]) == 28 and row["queries"] == 28 * 28 * 10 + 1
    assert max(max(r) for r in row["drop"]) == pytest.approx(row["max_drop"])
    assert (out / "pixel_map_0.png").stat().st_size > 1000 and res["seed"] == 0


def test_each_budget_breaks_robust_accuracy_down_by_class(ckpt, tmp_path):
    """Every per-budget summary carries the robust accuracy per class, balanced and with its
    interval, recomputed here from the per-image rows (still correct = correct before, not fooled)."""
    out = tmp_path / "b"
    assert main(["attack", "fgsm", "-m", ckpt, "-d", "synthetic", "--eps", "2/255", "32/255", "--n", "40",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    for summary in res["summaries"]:
        b = summary["robust_breakdown"]
        rows = [r for r in res["images"] if r["eps"] == summary["eps"]]
        kept = [r["clean_correct"] and not r["success"] for r in rows]
        assert b["n"] == 40 and b["accuracy"] == pytest.approx(summary["robust_accuracy"]) == sum(kept) / 40
        for c, name in enumerate(res["classes"]):
            mine = [k for k, r in zip(kept, rows, strict=True) if r["label"] == c]
            assert b["per_class"][name]["n"] == len(mine)
            assert b["per_class"][name]["accuracy"] == pytest.approx(sum(mine) / len(mine))
        per_class = [v["accuracy"] for v in b["per_class"].values()]
        assert b["balanced"] == pytest.approx(sum(per_class) / len(per_class))
        assert b["ci95"][0] <= b["accuracy"] <= b["ci95"][1]
        counts = [sum(r["label"] == c for r in rows) for c in range(len(res["classes"]))]
        assert b["constant"] == pytest.approx(max(counts) / 40)
        assert "sensitivity" not in b  # three classes


def test_binary_robust_breakdown_takes_the_critical_class_as_positive():
    """Robust sensitivity is the recall of the model's one critical class (here class 0), robust
    specificity that of the other; without a single critical class, class 1 is positive."""
    import torch

    from medfool.attacks.base import AttackResult
    from medfool.models.classifier import MetaView, ModelMeta
    from medfool.runs.attack import robust_breakdown

    def view(critical: tuple[int, ...]) -> MetaView:
        v = MetaView()
        v.meta = ModelMeta(task="binary", class_names=("tumour", "normal"), input_shape=(1, 4, 4), mean=(0.5,),
                           std=(0.25,), num_outputs=1, critical_classes=critical)
        return v

    y = torch.tensor([0, 0, 0, 0, 1, 1])
    clean_correct = torch.tensor([True, True, True, False, True, True])
    success = torch.tensor([True, False, False, False, False, True])  # tumour: 2 of 4 kept; normal: 1 of 2
    z = torch.zeros(6)
    r = AttackResult(attack="x", x_adv=torch.zeros(6, 1, 4, 4), success=success, clean_correct=clean_correct,
                     clean_pred=y, adv_pred=y, l0=z, l2=z, linf=z, gradients=z.long(), queries=z.long(), wall_s=0.0,
                     config={})
    b = robust_breakdown(r, y, view((0,)))
    assert b["positive"] == "tumour" and b["sensitivity"] == pytest.approx(0.5) and b["specificity"] == 0.5
    assert b["accuracy"] == pytest.approx(3 / 6) and b["balanced"] == pytest.approx(0.5)
    r2 = AttackResult(**{**r.__dict__, "success": torch.tensor([False, False, False, False, False, True])})
    b2 = robust_breakdown(r2, y, view(()))
    assert b2["positive"] == "normal" and b2["sensitivity"] == 0.5 and b2["specificity"] == pytest.approx(0.75)


@pytest.mark.parametrize("name", ["pgd", "square"])
def test_an_images_result_does_not_depend_on_its_batch(name, ckpt, tmp_path):
    """Each image draws from its own stream (seed, dataset index): the batch size, and so the
    neighbours an image is attacked with, changes nothing; this is what lets chunks of images
    run on different workers."""
    budget = ["--steps", "3"] if name == "pgd" else ["--queries", "30"]
    outs = []
    for batch in ("8", "5"):
        out = tmp_path / f"b{batch}"
        assert main(["attack", name, "-m", ckpt, "-d", "synthetic", "--eps", "8/255", *budget, "--n", "16",
                     "--batch-size", batch, "--seed", "3", "--out", str(out)]) == 0
        with np.load(out / "adversarial.npz") as z:
            outs.append(z["adversarial_0"])
    np.testing.assert_array_equal(outs[0], outs[1])
