"""An image's result must not depend on its neighbours in the batch: every registered attack,
with the same seed, gives image i the same bytes alone and inside a batch (its id names its
random stream). Universal attacks (one perturbation or patch for the whole batch) are exempt by
definition: their answer is a function of the batch."""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import attack_class, attack_names, get_attack

UNIVERSAL = {"uap", "patch"}
FAST = {"pgd": {"steps": 5}, "bim": {"steps": 5}, "apgd-ce": {"steps": 10}, "apgd-dlr": {"steps": 10},
        "cw": {"steps": 10}, "deepfool": {"steps": 10}, "eot-pgd": {"steps": 3, "samples": 2, "eval_samples": 2},
        "stain": {"steps": 5}, "square": {"queries": 60}, "simba": {"queries": 60}, "hsj": {"queries": 120},
        "boundary": {"queries": 120}, "noise": {"tries": 5}, "onepixel": {"population": 20, "generations": 3},
        "pixel-pareto": {"population": 20, "generations": 2}, "jsma": {"gamma": 0.05}, "fgsm": {},
        "ensemble": {"preset": "fast"}, "apgd-t": {"steps": 10, "targets": 2}, "fab-t": {"steps": 10, "targets": 2}}
PER_IMAGE = [n for n in attack_names() if n not in UNIVERSAL and n not in ("transfer", "fooling")]


@pytest.mark.slow
@pytest.mark.parametrize("name", PER_IMAGE)
def test_image_result_is_the_same_alone_and_in_a_batch(name: str, multiclass) -> None:
    model, x, y = multiclass
    if model.task not in attack_class(name).tasks:
        pytest.skip(f"{name} does not support {model.task} models")
    opts = FAST.get(name, {})
    n = 64  # the fixture's 24 test images, repeated: each copy is another image (its own id, its own stream)
    reps = -(-n // x.shape[0])
    xb, yb = x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]
    ids = torch.arange(100, 100 + n)
    batch = get_attack(name, **opts)(model, xb, yb, seed=7, ids=ids)
    for i in (0, 5, 37, n - 1):
        alone = get_attack(name, **opts)(model, xb[i:i + 1], yb[i:i + 1], seed=7, ids=ids[i:i + 1])
        assert torch.equal(alone.x_adv[0], batch.x_adv[i]), f"{name}: image {i} differs alone and in a batch"
        assert bool(alone.success[0]) == bool(batch.success[i])
        assert int(alone.queries[0]) == int(batch.queries[i])


def test_every_per_image_attack_is_covered() -> None:
    assert set(PER_IMAGE) <= set(FAST), set(PER_IMAGE) - set(FAST)


def test_streams_are_keyed_by_id_not_position() -> None:
    from medfool.utils.rng import ImageStreams

    a = ImageStreams(3, torch.tensor([10, 11, 12]))
    b = ImageStreams(3, torch.tensor([12]))
    assert torch.equal(a.rows(torch.tensor([2])).rand(1, 5), b.rows().rand(1, 5))
    assert not torch.equal(a.rows(torch.tensor([0])).rand(1, 5), a.rows(torch.tensor([0])).rand(1, 5))
    u = ImageStreams(0, torch.arange(4000)).rows().rand(4000, 8)
    assert abs(float(u.mean()) - 0.5) < 0.01 and float(u.min()) >= 0 and float(u.max()) < 1
    z = ImageStreams(0, torch.arange(4000)).rows().randn(4000, 8)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
