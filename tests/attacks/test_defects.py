"""Regression tests for defects that shape-only tests missed; each fails on the code before its fix."""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import get_attack
from medfool.attacks.goal import Goal


def test_multilabel_untargeted_margin_is_positive_until_a_label_flips() -> None:
    # truth: label 0 positive, label 1 negative; logits agree with the truth -> not fooled
    y = torch.tensor([[1, 0]])
    goal = Goal("multi-label", y)
    assert float(goal.margin(torch.tensor([[3.0, -2.0]]))) == pytest.approx(2.0)  # closest label to flipping
    assert float(goal.margin(torch.tensor([[3.0, 0.5]]))) < 0  # label 1 flipped: fooled
    assert bool(goal.success(torch.tensor([[3.0, 0.5]]))) and not bool(goal.success(torch.tensor([[3.0, -2.0]])))


@pytest.mark.parametrize("outputs", [1, 2, 3])
def test_dlr_loss_falls_back_to_the_margin_where_undefined(outputs: int) -> None:
    logits = torch.randn(5, outputs, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(5, dtype=torch.long)
    target = None if outputs < 3 else torch.ones(5, dtype=torch.long)  # 3 classes, targeted: DLR undefined
    goal = Goal("binary" if outputs < 3 else "multi-class", y, target)
    assert torch.allclose(goal.loss(logits, None, "dlr"), -goal.margin(logits))


@pytest.mark.parametrize("fixture", ["binary_one_logit", "binary_two_logit"])
def test_pgd_with_dlr_runs_on_binary_models(fixture: str, request: pytest.FixtureRequest) -> None:
    model, x, y = request.getfixturevalue(fixture)
    r = get_attack("pgd", eps=0.3, steps=10, loss="dlr")(model, x, y, seed=0)
    assert r.success_rate >= 0.9


@pytest.mark.slow
def test_jsma_attacks_one_and_two_logit_binary_models_alike(binary_one_logit, binary_two_logit) -> None:
    # the one-logit fixture is the two-logit network read as z1 - z0: the same decisions
    one = get_attack("jsma", gamma=0.4, theta=-1.0)(*binary_one_logit)
    two = get_attack("jsma", gamma=0.4, theta=-1.0)(*binary_two_logit)
    assert one.success_rate >= 0.9, one.success_rate  # before the fix: 0, no pair ever passed beta < 0
    assert torch.equal(one.success, two.success)
    assert float(one.l0[one.success].float().median()) > 0


@pytest.mark.slow
def test_cw_deepfool_start_respects_kappa(multiclass) -> None:
    model, x, y = multiclass
    r = get_attack("cw", kappa=2.0, steps=30, search_steps=3, lr=0.01)(model, x, y)
    ok = r.success & r.clean_correct
    assert bool(ok.any())
    with torch.no_grad():
        margin = Goal(model.task, y).margin(model(r.x_adv))
    assert float(margin[ok].max()) <= -2.0 + 1e-4, margin[ok]


def test_neural_cleanse_median_is_the_mean_of_the_two_middle_values() -> None:
    from medfool.defences.backdoor.cleanse import anomaly_index

    norms = torch.tensor([1.0, 4.0, 6.0, 20.0])  # median 5 (numpy), MAD median(|.-5|) = median(4,1,1,15) = 2.5
    expected = (5.0 - norms) / (1.4826 * 2.5)
    assert torch.allclose(anomaly_index(norms), expected)


def test_report_costs_average_over_the_images_the_success_rate_counts() -> None:
    from medfool.report.summary import summarise

    base = {"stage": "blackbox", "attack": "square", "budget": "8/255", "l0": 0.0, "l2": 0.0, "linf": 0.0,
            "psnr": None, "ssim": None, "ciede2000": None, "time_s": 0.0, "label": 0, "adv_pred": 1}
    rows = [{**base, "image": 0, "clean_correct": 1, "success": 1, "queries": 100, "gradients": 0},
            {**base, "image": 1, "clean_correct": 0, "success": 0, "queries": 1, "gradients": 0}]
    (s,) = summarise(rows)
    assert s["mean_queries"] == 100  # was 50.5: the misclassified image's single query diluted it


@pytest.mark.slow
def test_audit_onepixel_stage_takes_no_gradient(tiny_model, tiny_text, tmp_path) -> None:
    import sqlite3
    import subprocess
    import sys

    cfg = tmp_path / "a.toml"
    # the white-box stage runs first (its gradients must not leak into the next stage's count)
    text = tiny_text + "\n"
    for stage in ("corruptions", "blackbox", "patch", "maps"):
        text = text.replace(f"[{stage}]", f"[{stage}]\nenabled = false")
    cfg.write_text(text)
    out = tmp_path / "audit"
    subprocess.run([sys.executable, "-m", "medfool.cli.main", "audit", "-m", str(tiny_model), "-d", "synthetic",
                    "--config", str(cfg), "--out", str(out)], check=True, capture_output=True)
    with sqlite3.connect(out / "audit.sqlite") as db:
        grads = db.execute("SELECT MAX(gradients) FROM rows WHERE stage = 'onepixel'").fetchone()[0]
    assert grads == 0
