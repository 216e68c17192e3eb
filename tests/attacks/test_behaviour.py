"""Behaviour beyond the contract: goals per task, early stopping, the DLR fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from medfool.attacks import get_attack
from medfool.attacks.goal import Goal


def test_goal_margin_and_success_agree():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    g = Goal("multi-class", torch.tensor([0, 0]))
    assert g.margin(logits).tolist() == [1.0, -3.0]
    assert g.success(logits).tolist() == [False, True]
    gt = Goal("multi-class", torch.tensor([0, 0]), target=torch.tensor([2, 2]))
    assert gt.margin(logits).tolist() == [2.0, 2.0] and gt.success(logits).tolist() == [False, False]


def test_one_logit_binary_equals_two_logits():
    z = torch.tensor([[1.5], [-0.5]])
    two = torch.cat([torch.zeros_like(z), z], 1)
    y = torch.tensor([1, 1])
    a, b = Goal("binary", y), Goal("binary", y)
    assert torch.equal(a.margin(z), b.margin(two)) and torch.equal(a.loss(z), b.loss(two))
    assert a.success(z).tolist() == [False, True]


def test_multilabel_goal():
    y = torch.tensor([[1, 0, 0]])
    g = Goal("multi-label", y, attack_labels=torch.tensor([0, 1]))
    assert g.success(torch.tensor([[2.0, -1.0, 5.0]])).tolist() == [False]  # nothing in {0,1} flipped
    assert g.success(torch.tensor([[-2.0, -1.0, 5.0]])).tolist() == [True]  # label 0 flipped
    tg = Goal("multi-label", y, target=torch.tensor([[0, 1, 0]]), attack_labels=torch.tensor([0, 1]))
    assert tg.success(torch.tensor([[-2.0, -1.0, 0.0]])).tolist() == [False]  # label 1 not yet on
    assert tg.success(torch.tensor([[-2.0, 1.0, 0.0]])).tolist() == [True]


@pytest.mark.slow
def test_early_stop_spends_fewer_steps(multiclass):
    model, x, y = multiclass
    eager = get_attack("pgd", eps=0.5, steps=20)(model, x, y)
    fixed = get_attack("pgd", eps=0.5, steps=20, early_stop=False)(model, x, y)
    assert eager.success_rate == 1.0 and fixed.success_rate == 1.0
    assert float(eager.gradients.float().mean()) < 0.5 * float(fixed.gradients.float().mean())
    assert int(fixed.gradients.min()) == 20


def test_dlr_falls_back_for_two_classes(binary_one_logit, caplog):
    model, x, y = binary_one_logit
    with caplog.at_level(logging.WARNING):
        r = get_attack("apgd-dlr", steps=5)(model, x, y)
    assert "using the margin loss instead" in caplog.text
    assert r.x_adv.shape == x.shape


def test_stronger_budget_breaks_more(multiclass):
    model, x, y = multiclass
    small = get_attack("pgd", eps=1 / 255, steps=10)(model, x, y).success_rate
    large = get_attack("pgd", eps=64 / 255, steps=10)(model, x, y).success_rate
    assert large == 1.0 and small < large


def test_uap_is_one_perturbation_for_all(multiclass):
    model, x, y = multiclass
    r = get_attack("uap", eps=16 / 255, passes=3)(model, x, y, seed=1)
    v = r.extras["perturbation"]
    assert v.shape == (1, *x.shape[1:]) and float(v.abs().max()) <= 16 / 255 + 1e-6
    assert torch.allclose(r.x_adv, (x + v).clamp(0, 1))
    assert len(r.extras["fooling_history"]) >= 1


@pytest.mark.slow
def test_jsma_changes_few_features_to_the_extreme(multiclass):
    model, x, y = multiclass
    r = get_attack("jsma", gamma=0.05)(model, x, y, target=(y + 1) % 3)
    changed = r.x_adv != x
    assert bool((r.x_adv[changed] == 1.0).all())  # theta = +1 sets features to the maximum
    assert int(changed.flatten(1).sum(1).max()) <= 2 * -(-0.05 * x[0].numel() // 2)


def test_security_curve_is_monotone_and_counts_only_correct_images(multiclass):
    from medfool.eval.curve import security_curve

    model, x, y = multiclass
    curve = security_curve(model, x, y, attack="pgd", eps_list=[0.0, 2 / 255, 16 / 255, 64 / 255], steps=10)
    assert [p.eps for p in curve] == [0.0, 2 / 255, 16 / 255, 64 / 255]
    assert curve[0].success_rate == 0.0 and curve[0].robust_accuracy == curve[0].clean_accuracy
    assert curve[-1].success_rate == 1.0 and curve[-1].robust_accuracy == 0.0
    rob = [p.robust_accuracy for p in curve]
    assert rob == sorted(rob, reverse=True)
    assert curve[1].to_json()["eps_255"] == 2.0


def test_shared_clean_logits_give_the_same_result(multiclass):
    model, x, y = multiclass
    with torch.no_grad():
        clean = model(x)
    a = get_attack("pgd", steps=5)(model, x, y, seed=2)
    b = get_attack("pgd", steps=5)(model, x, y, seed=2, clean_logits=clean)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.clean_correct, b.clean_correct)
    assert int(b.queries.sum()) == int(a.queries.sum()) - x.shape[0]  # one forward fewer per image


def test_linf_projection_scalar_and_per_sample_agree():
    from medfool.attacks.norms import project

    d = torch.randn(4, 3, 5, 5)
    assert torch.equal(project(d, "linf", 0.1), project(d, "linf", torch.full((4,), 0.1)))
