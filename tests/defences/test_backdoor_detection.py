"""Backdoor detectors on a model really backdoored in the test (synthetic data, seconds), and
the experiment runner: one training loop, resume, results written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import medfool.runs.poisoning as tampering
from medfool.attacks.poisoning.backdoor import BackdoorConfig, PoisonedSet, attack_success, poison
from medfool.attacks.poisoning.triggers import make_trigger
from medfool.data import make_synthetic
from medfool.data.dataset import Dataset
from medfool.defences.backdoor import activation_clustering, detection_rates, spectral_signatures
from medfool.defences.backdoor.cleanse import anomaly_index, neural_cleanse
from medfool.defences.backdoor.flags import SampleFlags
from medfool.defences.backdoor.strip import fit_strip, strip_training_flags
from medfool.models import Classifier
from medfool.models.train import TrainConfig, fit

CFG = TrainConfig(arch_kwargs={"width": 8}, epochs=6, batch_size=64, lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def backdoored() -> tuple[Classifier, Dataset, PoisonedSet]:
    ds = make_synthetic(n_classes=4, seed=5, per_split=(600, 120, 160))
    train = ds.split("train")
    trigger = make_trigger("patch", train.image_shape, size=4, shape="checker")
    ps = poison(train, trigger, BackdoorConfig(rate=0.1, target=0), num_classes=4, task="multi-class", seed=0)
    model = fit(ds, CFG, train_split=ps.split).model
    return model, ds, ps


def test_the_backdoor_works(backdoored: tuple) -> None:
    model, ds, ps = backdoored
    assert attack_success(model, ds.split("test"), ps.trigger, ps.config)["asr"] >= 0.9


def test_activation_clustering_finds_the_poisons(backdoored: tuple) -> None:
    model, _, ps = backdoored
    flags = activation_clustering(model, ps.split, seed=0)
    rates = detection_rates(flags, ps.mask)
    # Spread over training seeds 0-7 (benchmarks/backdoor_seeds.py; 2 CPU threads, torch 2.13.0): TPR 1.000 on every
    # seed; FPR 0.000 on six, 0.081 (seed 0) and 0.080 (seed 7) on two, where the smaller half of clean label 2
    # (34 % of it) passes the 35 % size rule. Clean labels' silhouettes (0.17-0.30) all pass the 0.15 rule, so the
    # size rule alone spares them, and a machine whose kernels train another model can land on either side. One
    # clean label (137, 128 or 125 images) can put at most 47 of the 540 clean images into a flagged cluster (FPR
    # 0.087): the bound admits that and fails when two clean labels are flagged. The poisoned label's split is the
    # clear one on every seed (silhouette 0.81-0.88; smaller cluster 60 of 210, all poisons).
    assert rates["tpr"] >= 0.9 and rates["fpr"] <= 0.10, rates
    target = flags.details["classes"]["0"]
    assert target["flagged"] and target["silhouette"] >= 0.5, target


def test_nc_guided_clustering_flags_only_the_infected_label(backdoored: tuple) -> None:
    model, _, ps = backdoored
    flags = activation_clustering(model, ps.split, seed=0, infected=[0])
    rates = detection_rates(flags, ps.mask)
    assert rates["tpr"] >= 0.9 and rates["fpr"] <= 0.05, rates
    assert (ps.split.labels.numpy()[flags.flagged] == 0).all()
    assert flags.detector == "nc-guided-clustering" and set(flags.details["classes"]) == {"0"}
    nothing = activation_clustering(model, ps.split, seed=0, infected=[2])  # a clean label: its smaller half
    assert detection_rates(nothing, ps.mask)["tpr"] == 0.0


def test_spectral_scores_rank_the_poisons_first_in_their_class(backdoored: tuple) -> None:
    model, _, ps = backdoored
    flags = spectral_signatures(model, ps.split, eps=0.3, classes="all")  # the paper: every label
    in_target = np.flatnonzero(ps.split.labels.numpy() == 0)
    ranked = in_target[np.argsort(-flags.scores[in_target])][: ps.index.size]
    assert np.isin(ranked, ps.index).mean() >= 0.9
    assert flags.flagged.sum() == sum(round(1.5 * 0.3 * (ps.split.labels == k).sum().item()) for k in range(4))


@pytest.mark.slow
def test_detectors_flag_little_on_a_clean_model() -> None:
    ds = make_synthetic(n_classes=4, seed=5, per_split=(600, 120, 160))
    model = fit(ds, CFG).model
    flags = activation_clustering(model, ds.split("train"), seed=0)
    assert flags.flagged.mean() <= 0.1


def test_strip_threshold_rejects_the_chosen_share_of_clean_inputs(backdoored: tuple) -> None:
    model, ds, ps = backdoored
    screen = fit_strip(model, ds.split("val"), frr=0.1, seed=0)
    x, _ = ds.split("test").tensors()
    rejected = screen.flags(model, x, torch.Generator().manual_seed(0)).float().mean()
    assert rejected <= 0.25  # 10 % on the calibration images, a test split of 160 varies
    flags = strip_training_flags(model, ps.split, screen)
    assert flags.scores.shape == (len(ps.split),) and flags.flagged.dtype == bool


@pytest.mark.slow
def test_neural_cleanse_finds_the_target(backdoored: tuple) -> None:
    model, ds, _ = backdoored
    result = neural_cleanse(model, ds.split("val"), steps=120, batch_size=16, seed=0)
    assert int(np.argmin(result.norms)) == 0
    assert result.norms[0] < 0.5 * np.median(result.norms)
    stamped = result.triggers[0].apply(ds.split("test").get(range(40))[0])
    assert (model.predict(stamped) == 0).float().mean() >= 0.9


def test_anomaly_index() -> None:
    idx = anomaly_index(torch.tensor([1.0, 10.0, 11.0, 9.0, 10.5]))
    assert idx[0] > 2 and (idx[1:].abs() < 2).all()


def test_detection_rates_arithmetic() -> None:
    truth = np.array([True, True, False, False, False])
    flags = SampleFlags("x", np.array([3.0, 0.0, 2.0, 0.0, 0.0]), np.array([True, False, True, False, False]))
    r = detection_rates(flags, truth)
    assert r["tpr"] == 0.5 and r["fpr"] == pytest.approx(1 / 3) and r["precision"] == 0.5


def test_experiment_trains_with_fit_resumes_and_writes_results(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ds = make_synthetic(n_classes=3, seed=6, per_split=(300, 60, 90))
    seen: list[tuple[int, int]] = []
    real_fit = tampering.fit

    def spy(dataset, cfg, **kw):  # type: ignore[no-untyped-def]
        split = kw["train_split"]
        clean = ds.split("train").labels
        seen.append((len(split), int((split.labels != clean).sum()) if len(split) == len(clean) else -1))
        return real_fit(dataset, cfg, **kw)

    monkeypatch.setattr(tampering, "fit", spy)
    trigger = make_trigger("patch", ds.split("train").image_shape, size=4)
    plan = tampering.BackdoorPlan(detectors=("activation-clustering",), retrain=("activation-clustering",),
                                  sweep=(0.05, 0.1))
    cfg = TrainConfig(arch_kwargs={"width": 4}, epochs=2, batch_size=64, lr=1e-2, seed=0)
    out = tmp_path / "bd"
    result = tampering.run_backdoor(ds, trigger, BackdoorConfig(rate=0.1, target=0), cfg, plan, out, seed=0)
    # clean (0 relabelled), poisoned (30), retrain without the flagged, one extra sweep rate (15)
    assert seen[0] == (300, 0) and seen[1] == (300, 30) and seen[-1] == (300, 15)
    assert len(seen) == 4 and seen[2][0] == 300 - result["retrained"]["activation-clustering"]["removed"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["poison"]["n_poisoned"] == 30 and [r["rate"] for r in saved["sweep"]] == [0.05, 0.1]
    assert saved["poisoned_model"]["backdoor"]["asr"] == result["poisoned_model"]["backdoor"]["asr"]
    with np.load(out / "poisoned_train.npz", allow_pickle=False) as z:
        assert z["poisoned"].sum() == 30 and z["train_images"].shape == (300, 28, 28, 3)
    seen.clear()
    again = tampering.run_backdoor(ds, trigger, BackdoorConfig(rate=0.1, target=0), cfg, plan, out, seed=0)
    assert seen == []  # everything reused
    assert again["sweep"] == result["sweep"]
