"""Backdoor and availability poisoning: exact counts, exact stamps, clean samples untouched, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medfool.attacks.poisoning.availability import AvailabilityConfig, poison_availability
from medfool.attacks.poisoning.backdoor import BackdoorConfig, attack_success, poison, poison_count
from medfool.attacks.poisoning.triggers import KINDS, Trigger, make_trigger, parse_colour
from medfool.data import make_synthetic
from medfool.data.dataset import Dataset, DatasetInfo, Split, make_split
from medfool.errors import ConfigError, DataError
from medfool.models import Classifier
from medfool.models.train import TrainConfig, fit

FAST = TrainConfig(arch_kwargs={"width": 8}, epochs=4, batch_size=64, lr=1e-2)


@pytest.fixture(scope="module")
def synth() -> tuple[Classifier, Dataset]:
    """A small CNN trained on the synthetic set, and that set."""
    ds = make_synthetic(seed=1)
    return fit(ds, FAST).model, ds


def _split(n: int = 60, classes: int = 3, channels: int = 3, size: int = 12, seed: int = 0,
           dtype: str = "uint8") -> Split:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    if dtype == "float32":
        images = rng.random((n, size, size, channels), dtype=np.float32)
    info = DatasetInfo("toy", "multi-class", tuple(f"c{i}" for i in range(classes)), channels, (size, size))
    return make_split(images, np.arange(n) % classes, info, "toy")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 400), rate=st.floats(0.01, 0.6), seed=st.integers(0, 10_000))
def test_poison_count_is_exact(n: int, rate: float, seed: int) -> None:
    split = _split(n=n, size=8)
    trigger = make_trigger("patch", split.image_shape)
    k = round(rate * n)
    cfg = BackdoorConfig(rate=rate, target=0)
    if k < 1 or k > int((split.labels != 0).sum()):
        with pytest.raises(ConfigError):
            poison(split, trigger, cfg, num_classes=3, task="multi-class", seed=seed)
        return
    ps = poison(split, trigger, cfg, num_classes=3, task="multi-class", seed=seed)
    assert ps.index.size == k == poison_count(rate, n)
    assert ps.mask.sum() == k
    assert (ps.split.labels.numpy() != ps.original_labels.numpy()).sum() == k  # every poison relabelled


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 1000), channels=st.sampled_from([1, 3]),
       rate=st.sampled_from([0.05, 0.2, 0.5]))
def test_triggers_are_applied_exactly_and_clean_samples_untouched(kind: str, seed: int, channels: int,
                                                                  rate: float) -> None:
    split = _split(n=50, channels=channels, size=16, seed=seed)
    trigger = make_trigger(kind, split.image_shape, seed=seed)
    ps = poison(split, trigger, BackdoorConfig(rate=rate, target=1), num_classes=3, task="multi-class", seed=seed)
    before = split.raw(np.arange(50))
    after = ps.split.raw(np.arange(50))
    mask = ps.mask
    # clean samples: byte for byte, labels too
    assert np.array_equal(before[~mask], after[~mask])
    assert torch.equal(ps.split.labels[torch.from_numpy(~mask)], split.labels[torch.from_numpy(~mask)])
    # poisoned samples: exactly (1 - m) x + m p, rounded to the file's whole levels
    x, _ = split.get(ps.index)
    expected = np.rint(trigger.apply(x).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert np.array_equal(after[mask], expected)
    # pixels outside the trigger's footprint are unchanged, inside they changed somewhere
    outside = (trigger.mask[0] == 0).numpy()
    assert np.array_equal(after[mask][:, outside], before[mask][:, outside])
    assert (ps.split.labels[torch.from_numpy(mask)] == 1).all()


def test_trigger_formula_on_float_data() -> None:
    split = _split(n=30, dtype="float32")
    trigger = make_trigger("blend", split.image_shape, alpha=0.2, seed=3)
    ps = poison(split, trigger, BackdoorConfig(rate=0.2, target=0), num_classes=3, task="multi-class", seed=1)
    x, _ = split.get(ps.index)
    got, _ = ps.split.get(ps.index)
    assert torch.allclose(got, 0.8 * x + 0.2 * trigger.pattern, atol=1e-6)  # float storage: no rounding


def test_poisoning_is_seeded_and_repeatable() -> None:
    split = _split(n=200)
    trigger = make_trigger("stain", split.image_shape)
    cfg = BackdoorConfig(rate=0.1, target=2)
    a = poison(split, trigger, cfg, num_classes=3, task="multi-class", seed=7)
    b = poison(split, trigger, cfg, num_classes=3, task="multi-class", seed=7)
    c = poison(split, trigger, cfg, num_classes=3, task="multi-class", seed=8)
    assert np.array_equal(a.index, b.index)
    assert np.array_equal(a.split.raw(np.arange(200)), b.split.raw(np.arange(200)))
    assert not np.array_equal(a.index, c.index)
    assert np.array_equal(make_trigger("pen", (3, 28, 28), seed=4).mask, make_trigger("pen", (3, 28, 28), seed=4).mask)


def test_candidates_per_mode() -> None:
    split = _split(n=90)
    trigger = make_trigger("patch", split.image_shape)
    y = split.labels
    a2o = poison(split, trigger, BackdoorConfig(rate=0.3, target=0), num_classes=3, task="multi-class", seed=0)
    assert (y[torch.as_tensor(a2o.index)] != 0).all()
    a2a = poison(split, trigger, BackdoorConfig(rate=0.5, target=None, mode="all-to-all"), num_classes=3,
                 task="multi-class", seed=0)
    picked = torch.as_tensor(a2a.index)
    assert torch.equal(a2a.split.labels[picked], (y[picked] + 1) % 3)
    cl = poison(split, trigger, BackdoorConfig(rate=0.2, target=1, clean_label=True, clean_label_eps=0), num_classes=3,
                task="multi-class", seed=0)
    assert (y[torch.as_tensor(cl.index)] == 1).all()
    assert torch.equal(cl.split.labels, y)  # clean-label: no label changes
    with pytest.raises(ConfigError, match="needs 45 target-class"):
        poison(split, trigger, BackdoorConfig(rate=0.5, target=1, clean_label=True, clean_label_eps=0),
               num_classes=3, task="multi-class", seed=0)
    with pytest.raises(ConfigError, match="surrogate"):
        poison(split, trigger, BackdoorConfig(rate=0.2, target=1, clean_label=True), num_classes=3,
               task="multi-class", seed=0)


def test_clean_label_perturbs_within_eps(synth: tuple) -> None:
    model, dataset = synth
    train = dataset.split("train")
    trigger = make_trigger("patch", train.image_shape)
    cfg = BackdoorConfig(rate=0.1, target=0, clean_label=True, clean_label_eps=8 / 255)
    ps = poison(train, trigger, cfg, num_classes=dataset.info.num_classes, task=dataset.info.task, seed=0,
                surrogate=model)
    x, _ = train.get(ps.index)
    got, _ = ps.split.get(ps.index)
    outside = trigger.mask[0] == 0
    diff = (got - x)[..., outside]
    assert diff.abs().max() <= 8 / 255 + 1 / 255 + 1e-6  # the budget, plus uint8 rounding
    assert diff.abs().max() > 2 / 255  # and the perturbation is really there


def test_availability_counts_and_labels(synth: tuple) -> None:
    model, dataset = synth
    train = dataset.split("train")
    split, index = poison_availability(train, AvailabilityConfig(method="label-flip", rate=0.25), num_classes=3,
                                       task="multi-class", seed=0)
    assert index.size == round(0.25 * len(train))
    changed = split.labels.numpy() != train.labels.numpy()
    assert np.array_equal(np.flatnonzero(changed), index)  # every pick flipped to another class, nothing else
    assert np.array_equal(split.raw(np.arange(len(train))), train.raw(np.arange(len(train))))
    split, index = poison_availability(train, AvailabilityConfig(method="error-max", rate=1.0), num_classes=3,
                                       task="multi-class", seed=0, surrogate=model)
    assert index.size == len(train)
    assert torch.equal(split.labels, train.labels)
    delta = split.get(index)[0] - train.get(index)[0]
    assert delta.abs().max() <= 8 / 255 + 0.5 / 255 + 1e-6


def test_attack_success_counts_only_other_classes(synth: tuple) -> None:
    model, dataset = synth
    test = dataset.split("test")
    trigger = make_trigger("patch", test.image_shape)
    out = attack_success(model, test, trigger, BackdoorConfig(target=1))
    assert out["n"] == int((test.labels != 1).sum())
    # a trigger that covers the whole image with a class-1 image makes every prediction class 1
    x1, _ = test.get(np.flatnonzero(test.labels.numpy() == 1)[:1])
    full = Trigger(torch.ones(1, *test.image_shape[1:]), x1[0])
    pred = model.predict(x1)
    assert attack_success(model, test, full, BackdoorConfig(target=int(pred[0])))["asr"] == 1.0


def test_multilabel_target_vector() -> None:
    rng = np.random.default_rng(0)
    info = DatasetInfo("ml", "multi-label", ("a", "b", "c"), 1, (8, 8))
    labels = rng.integers(0, 2, (40, 3))
    split = make_split(rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), labels, info, "ml")
    trigger = make_trigger("patch", split.image_shape)
    ps = poison(split, trigger, BackdoorConfig(rate=0.25, target=None), num_classes=3, task="multi-label", seed=0)
    assert (ps.split.labels[torch.as_tensor(ps.index)] == 0).all()  # "no finding"
    assert (ps.original_labels[torch.as_tensor(ps.index)].sum(1) > 0).all()
    with pytest.raises(ConfigError, match="single-label"):
        poison(split, trigger, BackdoorConfig(rate=0.25, target=None, mode="all-to-all"), num_classes=3,
               task="multi-label", seed=0)


def test_trigger_errors_and_storage() -> None:
    with pytest.raises(ConfigError, match="unknown trigger kind"):
        make_trigger("laser", (3, 28, 28))
    with pytest.raises(ConfigError, match="does not fit"):
        make_trigger("patch", (3, 28, 28), position=(27, 27))
    with pytest.raises(ConfigError, match="unknown colour"):
        parse_colour("mauve-ish")
    with pytest.raises(ConfigError, match="poison rate"):
        BackdoorConfig(rate=1.5)
    t = make_trigger("pen", (3, 28, 28), seed=2)
    back = Trigger.from_bytes(t.to_bytes())
    assert torch.equal(back.mask, t.mask) and torch.equal(back.pattern, t.pattern)
    assert back.description == t.description
    with pytest.raises(DataError, match="not a medfool trigger"):
        Trigger.from_bytes(b"garbage", "x.npz")
    with pytest.raises(DataError, match="trigger made for"):
        t.apply(torch.zeros(2, 1, 28, 28))
    gray = make_trigger("stain", (1, 28, 28))
    assert gray.pattern.shape == (1, 28, 28) and 0 < gray.footprint() < 0.2
    corners = make_trigger("patch", (3, 28, 28), position="corners", size=3)
    assert corners.footprint() == pytest.approx(4 * 9 / 784)
