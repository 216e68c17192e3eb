"""Defences on default-trained models of the real data (what users get)."""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import get_attack
from medfool.defences.input_transforms import with_transforms

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _correct_test_images(model, ds, n: int):
    x, y = ds.split("test").get(range(4 * n))
    keep = (model.predict(x) == y).nonzero().flatten()[:n]
    return x[keep], y[keep]


@pytest.mark.parametrize("spec", [{"name": "bit-depth", "bits": 3}, {"name": "jpeg", "quality": 75}])
def test_transform_looks_robust_to_plain_pgd_and_falls_to_bpda_and_eot(path_model, spec) -> None:
    """Athalye et al. 2018 on a default PathMNIST model: plain PGD through the deployed rounding
    gets no gradient and barely moves the answers; the same PGD with BPDA (and EOT, a no-op for
    deterministic transforms) breaks nearly every image, judged by the deployed model."""
    model, ds = path_model
    defended = with_transforms(model, [spec])
    x, y = _correct_test_images(defended, ds, 48)
    assert len(y) >= 40
    pgd = get_attack("pgd", eps=8 / 255, steps=20)
    plain = pgd(defended, x, y, seed=0)
    with defended.adaptive(eot=4) as view:
        adaptive = pgd(view, x, y, seed=0)
    with torch.no_grad():
        fooled = defended.predict(adaptive.x_adv) != y  # judged by the deployed model
    assert plain.success_rate <= 0.25, f"plain PGD should look blocked, fooled {plain.success_rate:.0%}"
    assert float(fooled.float().mean()) >= 0.8, f"BPDA+EOT should break it, fooled {fooled.float().mean():.0%}"
