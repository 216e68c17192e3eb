"""Defended models are models: input transforms, ensembles and their two gradients (deployed
and adaptive), on every task type."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfool.attacks import get_attack
from medfool.defences.input_transforms import with_transforms
from medfool.errors import ConfigError
from medfool.models import Classifier, ensemble_classifier, load_classifier, save_checkpoint
from medfool.models.architectures import build
from medfool.models.classifier import ModelMeta
from medfool.models.preprocess import PREPROCESS, check_spec, parse_spec

TASKS = [("multi-class", 3, 3), ("binary", 2, 1), ("binary", 2, 2), ("multi-label", 3, 3)]


def _model(seed: int, task: str = "multi-class", k: int = 3, out: int = 3, channels: int = 3,
           pre: tuple[dict[str, object], ...] = ()) -> Classifier:
    torch.manual_seed(seed)
    meta = ModelMeta(task=task, class_names=tuple("abc"[:k]), input_shape=(channels, 16, 16), mean=(0.5,) * channels,
                     std=(0.25,) * channels, num_outputs=out, arch="small_cnn", arch_kwargs={"width": 8},
                     preprocess=pre)
    return Classifier(build("small_cnn", in_channels=channels, num_outputs=out, width=8), meta).eval()


def _grad(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).sum(), x)
    return g


@pytest.mark.parametrize("name", list(PREPROCESS))
def test_each_transform_keeps_its_forward_under_bpda_and_is_batch_independent(name: str) -> None:
    model = with_transforms(_model(0), [{"name": name}])
    x = torch.rand(12, 3, 16, 16)
    deployed = model(x)
    assert torch.allclose(model(x[:3]), deployed[:3], atol=1e-5), "an answer depends on the batch"
    if not model.randomised:
        with model.adaptive():
            assert torch.allclose(model(x), deployed, atol=1e-5), "BPDA must not change the forward pass"
    with model.adaptive(eot=4):
        assert float(_grad(model, x).abs().sum()) > 0, "the adaptive attacker needs a gradient"


@pytest.mark.parametrize("name", ["jpeg", "bit-depth"])
def test_rounding_transforms_mask_the_deployed_gradient(name: str) -> None:
    model = with_transforms(_model(0), [{"name": name}])
    x = torch.rand(4, 3, 16, 16)
    assert float(_grad(model, x).abs().sum()) == 0.0       # what a naive attacker sees
    with model.adaptive():
        assert float(_grad(model, x).abs().sum()) > 0.0    # BPDA


def test_random_transform_draws_fresh_under_eot_and_fixed_when_deployed() -> None:
    model = with_transforms(_model(0), [{"name": "resize-pad", "max_shrink": 4}])
    x = torch.rand(6, 3, 16, 16)
    assert torch.equal(model(x), model(x))
    with model.adaptive(eot=1):
        assert not torch.equal(model(x), model(x))


def test_eot_draws_do_not_depend_on_the_batch() -> None:
    """An image's EOT average is the same alone or among others (its draws are keyed by its own
    pixels, the draw's index and the call's index, never by its place in the batch)."""
    model = with_transforms(_model(0), [{"name": "resize-pad", "max_shrink": 4}])
    x = torch.rand(40, 3, 16, 16)
    with model.adaptive(eot=4):
        together = [model(x) for _ in range(2)]
    with model.adaptive(eot=4):
        alone = [model(x[5:6]) for _ in range(2)]
    for call in range(2):
        assert torch.allclose(together[call][5:6], alone[call], atol=1e-5), f"call {call}"
    assert not torch.allclose(together[0], together[1]), "each call draws afresh"


@pytest.mark.parametrize(("task", "k", "out"), TASKS)
@pytest.mark.parametrize("combine", ["mean", "vote"])
def test_ensemble_saves_loads_and_has_two_gradients(tmp_path: Path, task: str, k: int, out: int,
                                                    combine: str) -> None:
    members = [_model(i, task, k, out, pre=({"name": "jpeg"},) if i == 1 else ()) for i in range(3)]
    ens = ensemble_classifier(members, combine)
    x = torch.rand(5, 3, 16, 16)
    path = save_checkpoint(ens, tmp_path / "e.safetensors")
    loaded, _ = load_classifier(path)
    assert torch.allclose(loaded(x), ens(x), atol=1e-6)
    if combine == "mean":
        assert torch.allclose(ens(x), torch.stack([m(x) for m in members]).mean(0), atol=1e-5)
    else:
        assert float(_grad(ens, x).abs().sum()) == 0.0
        # the vote: the ensemble answers what most members answer
        labels = torch.stack([m.predict(x) for m in members])
        majority = (labels.float().mean(0) > 0.5).long() if labels.dim() == 3 or out == 1 else labels.mode(0).values
        assert torch.equal(ens.predict(x), majority)
    with ens.adaptive():
        assert float(_grad(ens, x).abs().sum()) > 0.0


def test_ensemble_refuses_mismatched_members() -> None:
    with pytest.raises(ConfigError, match="does not match"):
        ensemble_classifier([_model(0), _model(1, "binary", 2, 1)])
    with pytest.raises(ConfigError, match="at least two"):
        ensemble_classifier([_model(0)])


def test_transform_defended_checkpoint_round_trip(tmp_path: Path) -> None:
    model = with_transforms(_model(0, channels=1), [{"name": "median", "size": 3}, {"name": "bit-depth", "bits": 5}])
    path = save_checkpoint(model, tmp_path / "d.safetensors")
    loaded, _ = load_classifier(path)
    assert loaded.meta.preprocess == model.meta.preprocess
    x = torch.rand(4, 1, 16, 16)
    assert torch.allclose(loaded(x), model(x), atol=1e-6)


@pytest.mark.parametrize(("text", "message"), [
    ("jpg", "unknown input transform 'jpg'"), ("jpeg:quality=0", "quality must be a number in"),
    ("median:size=4", "size must be odd"), ("bit-depth:levels=3", "has no option"), ("jpeg:quality", "KEY=VALUE"),
])
def test_bad_transform_specs_are_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(text)


def test_specs_fill_defaults() -> None:
    assert check_spec({"name": "jpeg"}) == {"quality": 75}
    assert parse_spec("blur:sigma=0.5") == {"name": "blur", "sigma": 0.5}


def test_attack_runs_on_defended_models_of_every_task() -> None:
    for task, k, out in TASKS:
        model = with_transforms(_model(0, task, k, out), [{"name": "bit-depth"}])
        x = torch.rand(4, 3, 16, 16)
        y = torch.randint(0, 2, (4, k)) if task == "multi-label" else torch.randint(0, k, (4,))
        with model.adaptive():
            r = get_attack("pgd", eps=8 / 255, steps=3)(model, x, y)
        assert r.x_adv.shape == x.shape
