"""EOT transforms and the stain attack: identities, gradients, bounds, clear errors."""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import get_attack
from medfool.attacks.evasion.stain import StainConfig, restain
from medfool.attacks.transforms import TRANSFORMS, TransformSet, hed_jitter, jpeg_like
from medfool.utils.rng import GeneratorDraw


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_keeps_shape_range_and_gradient(name):
    gen = GeneratorDraw(torch.Generator().manual_seed(0))
    x = torch.rand(4, 3, 28, 28, requires_grad=True)
    out = TRANSFORMS[name](x, gen)
    assert out.shape == x.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    (g,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), x)
    assert float(g.abs().sum()) > 0


def test_hed_jitter_without_strength_is_identity():
    x = torch.rand(3, 3, 16, 16) * 0.9 + 0.05
    assert torch.allclose(hed_jitter(x, GeneratorDraw(torch.Generator()), sigma=0.0), x, atol=1e-5)


def test_hed_jitter_equals_scaling_the_stain_concentrations():
    from medfool.utils.hed import hed_to_od, od_to_hed, od_to_rgb, rgb_to_od

    x = torch.rand(5, 3, 12, 12) * 0.9 + 0.05
    out = hed_jitter(x, GeneratorDraw(torch.Generator().manual_seed(3)), sigma=0.1)
    gen = torch.Generator().manual_seed(3)
    a = 1 + 0.1 * (2 * torch.rand(5, 3, generator=gen) - 1)
    b = 0.1 * (2 * torch.rand(5, 3, generator=gen) - 1)
    hed = od_to_hed(rgb_to_od(x)) * a[:, :, None, None] + b[:, :, None, None]
    assert torch.allclose(out, od_to_rgb(hed_to_od(hed)).clamp(0, 1), atol=1e-5)


def test_jpeg_like_is_close_at_high_quality_and_lossy_at_low():
    x = torch.rand(2, 3, 28, 28)
    gen = GeneratorDraw(torch.Generator().manual_seed(0))
    high = (jpeg_like(x, gen, quality=(100, 100)) - x).abs().mean()
    low = (jpeg_like(x, gen, quality=(10, 10)) - x).abs().mean()
    assert float(high) < 0.01 < float(low)


def test_unknown_transform():
    with pytest.raises(ValueError, match="transforms must be among"):
        TransformSet(["rotate45"])
    with pytest.raises(ValueError, match="transforms must be among"):
        get_attack("eot-pgd", transforms=("flip",))


def test_restain_identity_and_bounds(multiclass):
    x = torch.rand(5, 3, 16, 16) * 0.9 + 0.05
    assert torch.allclose(restain(x, torch.zeros(5, 11)), x, atol=1e-5)
    model, xs, ys = multiclass
    cfg = StainConfig(concentration=0.3, stain_vector=0.05, illuminant=0.1, steps=5)
    r = get_attack("stain", **cfg.to_json())(model, xs, ys)
    theta = r.extras["parameters"]
    assert bool((theta.abs() <= cfg.bounds() + 1e-6).all())
    assert torch.allclose(r.x_adv, restain(xs, theta), atol=1e-5)


def test_stain_needs_rgb(binary_one_logit):
    model, x, y = binary_one_logit
    with pytest.raises(ValueError, match="the stain attack needs RGB"):
        get_attack("stain", steps=2)(model, x, y)


@pytest.mark.realdata
@pytest.mark.slow
def test_eot_survives_transforms_better_than_pgd(path_model):
    from medfool.attacks.goal import Goal

    model, ds = path_model
    x, y = ds.split("test").get(range(120))
    with torch.no_grad():
        ok = model.predict(x) == y
    x, y = x[ok][:80], y[ok][:80]
    tset = TransformSet(("dihedral", "hed", "blur", "noise", "jpeg"))

    def survival(xa):
        idx = torch.arange(len(xa)).repeat_interleave(16)
        with torch.no_grad():
            logits = model(tset(xa.repeat_interleave(16, 0), GeneratorDraw(torch.Generator().manual_seed(7))))
        return float(Goal("multi-class", y).success(logits, idx).float().mean())

    pgd = get_attack("pgd", eps=8 / 255, steps=20)(model, x, y)
    eot = get_attack("eot-pgd", eps=8 / 255)(model, x, y)
    assert survival(eot.x_adv) >= survival(pgd.x_adv) + 0.1
    assert abs(float(eot.extras["transform_success"].mean()) - survival(eot.x_adv)) < 0.1
