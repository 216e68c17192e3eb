"""Oracles on real tiles that a do-nothing attack would fail."""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import get_attack

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _correct(model, ds, n=200):
    x, y = ds.split("test").get(range(n))
    with torch.no_grad():
        keep = model.predict(x) == y
    return x[keep], y[keep]


@pytest.mark.parametrize("fixture", ["path_model", "lung_model"])
def test_pgd_8_255_breaks_95_percent(fixture, request):
    model, ds = request.getfixturevalue(fixture)
    x, y = _correct(model, ds)
    assert len(x) >= 100
    r = get_attack("pgd", eps=8 / 255, steps=10)(model, x, y, seed=0)
    assert r.success_rate >= 0.95, f"PGD 8/255 broke only {r.success_rate:.1%} of {len(x)} tiles"
    assert float(r.linf.max()) <= 8 / 255 + 1e-6


def test_minimal_attacks_beat_pgd_l2_at_equal_success(path_model):
    model, ds = path_model
    x, y = _correct(model, ds, 120)
    pgd = get_attack("pgd", norm="l2", eps=3.0, steps=20)(model, x, y, seed=0)
    deepfool = get_attack("deepfool")(model, x, y)
    cw = get_attack("cw")(model, x, y)
    both = pgd.success & deepfool.success & cw.success
    assert float(both.float().mean()) >= 0.95  # equal (near-total) success for all three
    med = {name: float(r.l2[both].median()) for name, r in (("pgd", pgd), ("deepfool", deepfool), ("cw", cw))}
    assert med["deepfool"] < med["pgd"] and med["cw"] < med["pgd"], med
    assert med["cw"] <= med["deepfool"] * 1.05, med  # C&W optimises the L2 distance directly


def test_universal_perturbation_fools_held_out_tiles(path_model):
    from medfool.attacks.evasion.uap import fooling_rate

    model, ds = path_model
    xtr, ytr = ds.split("train").tensors()
    xte, _ = ds.split("test").tensors()
    attack = get_attack("uap", eps=8 / 255)
    v, _ = attack.craft(model, xtr, ytr, torch.Generator().manual_seed(0))  # type: ignore[attr-defined]
    held_out = fooling_rate(model, xte, v)
    assert float(v.abs().max()) <= 8 / 255 + 1e-6
    assert held_out >= 0.5, f"one 8/255 perturbation changed only {held_out:.1%} of held-out predictions"


def test_patch_beats_the_natural_patch_and_its_control_on_held_out_tiles(path_model):
    from medfool.attacks.patch.natural import natural_patch

    model, ds = path_model
    target = ds.info.class_index("lymphocytes")
    xtr, ytr = ds.split("train").tensors()
    xte, yte = ds.split("test").tensors()
    keep = yte != target
    xte, yte = xte[keep], yte[keep]
    attack = get_attack("patch", area=0.1, steps=150)
    patch = attack.craft(model, xtr, ytr, torch.Generator().manual_seed(0), target=target)  # type: ignore[attr-defined]
    adv = attack.apply(model, patch, xte, yte, torch.Generator().manual_seed(1))  # type: ignore[attr-defined]
    k = patch.pixels.shape[-1]
    assert k * k <= 0.1 * 28 * 28
    nat = natural_patch(model, xtr, ytr, xte, yte, k, torch.Generator().manual_seed(2), target=target)
    ctl = natural_patch(model, xtr, ytr, xte, yte, k, torch.Generator().manual_seed(2), target=target, control=True)
    rates = (adv.success_rate, nat.success_rate, ctl.success_rate)
    # the fixture model is trained in the session, so it differs with the CPU's kernels and thread
    # count: 0.50 against 0.015 / 0.0 with one thread; do-nothing patches stay near 0
    assert rates[0] >= 0.4 and rates[0] >= rates[1] + 0.3 and rates[0] >= rates[2] + 0.3, rates
