"""Every invalid config or input raises a clear error."""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import get_attack
from medfool.attacks.evasion.pgd import PGDConfig


@pytest.mark.parametrize(("options", "message"), [
    ({"eps": -0.1}, r"eps must be in \[0, 1\], got -0.1"),
    ({"eps": 3.0}, r"eps must be in \[0, 1\], got 3"),
    ({"norm": "l1"}, "norm must be one of linf, l2, got 'l1'"),
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"eps": float("nan")}, "eps must be a number"),
    ({"loss": "hinge"}, "loss must be one of"),
])
def test_bad_pgd_config(options, message):
    with pytest.raises(ValueError, match=message):
        PGDConfig(**options)


def test_unknown_attack_and_option():
    with pytest.raises(ValueError, match="unknown attack 'pgf'; did you mean 'pgd'"):
        get_attack("pgf")
    with pytest.raises(ValueError, match="pgd has no option epsilon"):
        get_attack("pgd", epsilon=0.1)


def test_bad_inputs(multiclass):
    model, x, y = multiclass
    pgd = get_attack("pgd", steps=2)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite"):
        pgd(model, bad, y)
    with pytest.raises(ValueError, match=r"x must be in \[0, 1\].*normalisation belongs in the model"):
        pgd(model, x * 2 - 0.5, y)
    with pytest.raises(ValueError, match=r"y must be in \[0, 2\], got values in \[1, 5\]"):
        pgd(model, x, torch.where(y == 0, 5, y))
    with pytest.raises(ValueError, match="target must differ from the true label, got target == label for"):
        pgd(model, x, y, target=y)
    with pytest.raises(ValueError, match=r"x must have images of shape \(3, 28, 28\)"):
        pgd(model, x[:, :1], y)
    with pytest.raises(TypeError, match="x must be a float tensor"):
        pgd(model, (x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match="y must have one label per image"):
        pgd(model, x, y[:-1])
    with pytest.raises(ValueError, match="attack_labels is for multi-label models"):
        pgd(model, x, y, attack_labels=[0])
    with pytest.raises(ValueError, match="unknown class 'tumor'"):
        pgd(model, x, y, target="tumor")


def test_unsupported_combinations(multiclass, multilabel):
    model, x, y = multiclass
    with pytest.raises(ValueError, match="deepfool is untargeted only"):
        get_attack("deepfool")(model, x, y, target=(y + 1) % 3)
    ml, xm, ym = multilabel
    with pytest.raises(ValueError, match="deepfool does not support multi-label models"):
        get_attack("deepfool")(ml, xm, ym)
