"""The ensemble is the worst case per image: at or below every member run alone, and it breaks
what a do-nothing attack cannot."""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import get_attack
from medfool.attacks.ensemble import members


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["multiclass", "binary_one_logit", "binary_two_logit", "multilabel"])
def test_ensemble_is_at_or_below_each_member(fixture: str, request: pytest.FixtureRequest) -> None:
    model, x, y = request.getfixturevalue(fixture)
    eps = 0.15
    ids = torch.arange(x.shape[0])
    ens = get_attack("ensemble", eps=eps, preset="fast")(model, x, y, seed=3, ids=ids)
    assert float(ens.linf.max()) <= eps + 1e-6
    assert ens.success_rate >= 0.5, ens.success_rate
    for label, attack in members("fast", model.task, eps, "linf"):
        alone = attack(model, x, y, seed=3, ids=ids)
        # an image a member breaks alone is broken by the ensemble
        assert bool((ens.success | ~(alone.success & alone.clean_correct)).all()), label
        assert ens.robust_accuracy <= alone.robust_accuracy, label


def test_fab_t_stays_within_budget_and_breaks_images(multiclass) -> None:
    model, x, y = multiclass
    r = get_attack("fab-t", eps=0.1, steps=30, targets=2)(model, x, y)
    assert float(r.linf.max()) <= 0.1 + 1e-6
    assert r.success_rate >= 0.5


def test_ensemble_skips_members_once_every_image_is_broken(multiclass) -> None:
    """At a budget that breaks everything, APGD-CE breaks every image and no later member runs
    (the fast loop's check of the ensemble's bookkeeping)."""
    model, x, y = multiclass
    r = get_attack("ensemble", eps=0.5, preset="fast")(model, x[:6], y[:6], seed=0)
    won = r.success & r.clean_correct
    assert bool(won[r.clean_correct].all())
    assert r.extras["members"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert set(r.extras["broken_by"][won].tolist()) == {0}
    assert int(r.queries.max()) <= 1 + 20 + 2  # the clean query and APGD-CE's steps, nothing from Square
