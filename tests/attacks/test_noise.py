"""The random-noise baseline: query-only, at most ``tries`` draws, stops an image at its first success."""

from __future__ import annotations

import torch

from medfool.attacks import get_attack


def test_noise_spends_at_most_its_tries_and_stops_on_success(multiclass):
    model, x, y = multiclass
    r = get_attack("noise", eps=64 / 255, tries=6)(model, x, y, seed=0)
    assert int(r.gradients.sum()) == 0  # query access only
    assert int(r.queries.max()) <= 1 + 6  # the clean query plus the tries
    won = r.success & r.clean_correct
    assert bool(won.any()) and bool((~won).any()), "this budget should fool some images, not all"
    assert bool((r.queries[won] <= r.queries[~won].max()).all())
    # every changed pixel sits on the ball's surface (or was clipped at 0 / 1)
    delta = (r.x_adv - x).abs()
    on_surface = (delta - 64 / 255).abs() < 1e-5
    clipped = (r.x_adv == 0) | (r.x_adv == 1)
    assert bool((on_surface | clipped).all())


def test_noise_is_weaker_than_pgd_at_the_same_budget(multiclass):
    model, x, y = multiclass
    noise = get_attack("noise", eps=16 / 255, tries=10)(model, x, y, seed=0)
    pgd = get_attack("pgd", eps=16 / 255, steps=10)(model, x, y, seed=0)
    assert pgd.success_rate >= noise.success_rate
    assert torch.equal(noise.clean_correct, pgd.clean_correct)
