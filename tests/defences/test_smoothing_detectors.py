"""Randomized smoothing's statistics, detectors' thresholds and the robust-training objectives."""

from __future__ import annotations

import math

import pytest
import torch

from medfool.data import make_synthetic
from medfool.data.dataset import Dataset
from medfool.defences.detector_attack import evaluate_detector
from medfool.defences.detectors import DETECTORS, fit_detector, tpr_at_fpr
from medfool.defences.evaluation import BudgetRow, DefenceReport, finding
from medfool.defences.robust_training import RobustObjective, robust_accuracy
from medfool.defences.smoothing import binomial_lower_bound, certified_accuracy, certify
from medfool.errors import ConfigError
from medfool.models import Classifier, ModelMeta
from medfool.models.architectures import build
from medfool.models.train import TrainConfig, fit

FAST = TrainConfig(arch_kwargs={"width": 8}, epochs=4, batch_size=64, lr=1e-2)


@pytest.fixture(scope="module")
def trained() -> tuple[Classifier, Dataset]:
    ds = make_synthetic(seed=1, per_split=(300, 200, 60))
    return fit(ds, FAST).model, ds


@pytest.mark.parametrize(("k", "n", "expected"), [
    # scipy.stats.beta.ppf(0.001, k, n - k + 1), computed once
    (990, 1000, 0.9760361871553114), (600, 1000, 0.5510754739370525), (1000, 1000, 0.9931160484209338),
    (50, 100, 0.34479800642531777), (1, 10, 0.00010004502852067863),
])
def test_clopper_pearson_lower_bound_matches_scipy(k: int, n: int, expected: float) -> None:
    assert binomial_lower_bound(k, n, 0.001) == pytest.approx(expected, abs=1e-10)


def test_certify_abstains_on_a_coin_and_certifies_a_constant(trained: tuple[Classifier, Dataset]) -> None:
    model, ds = trained
    x, y = ds.split("test").get(range(6))
    # huge noise: the base model's answers are close to a coin -> abstain or tiny radius
    cert = certify(model, x, list(range(6)), sigma=50.0, n0=20, n=200)
    assert cert.radius.max() < 50.0 * 3.1
    # tiny noise: every answer is the base model's, certified with pA's bound at 0.001 (radius ~ 3.1 sigma)
    cert = certify(model, x, list(range(6)), sigma=1e-4, n0=20, n=1000)
    assert torch.equal(cert.prediction, model.predict(x))
    expected = 1e-4 * float(torch.special.ndtri(torch.tensor(binomial_lower_bound(1000, 1000, 0.001))))
    assert torch.allclose(cert.radius, torch.full((6,), expected, dtype=torch.float64))
    acc = certified_accuracy(cert, y, [0.0, 1.0])
    assert acc["1"] == 0.0 and acc["abstain"] == 0.0
    assert acc["0"] == pytest.approx(float((model.predict(x) == y).float().mean()))


def test_certificate_does_not_depend_on_the_batch(trained: tuple[Classifier, Dataset]) -> None:
    model, ds = trained
    x, _ = ds.split("test").get(range(5))
    whole = certify(model, x, [10, 11, 12, 13, 14], sigma=0.25, n0=20, n=100)
    alone = certify(model, x[3:4], [13], sigma=0.25, n0=20, n=100)
    assert float(whole.p_lower[3]) == float(alone.p_lower[0])


def test_multilabel_certify_is_refused() -> None:
    meta = ModelMeta(task="multi-label", class_names=("a", "b"), input_shape=(1, 8, 8), mean=(0.5,), std=(0.25,),
                     num_outputs=2, arch="small_cnn", arch_kwargs={"width": 4})
    model = Classifier(build("small_cnn", in_channels=1, num_outputs=2, width=4), meta)
    with pytest.raises(ConfigError, match="single-label"):
        certify(model, torch.rand(2, 1, 8, 8), [0, 1], sigma=0.25)


def test_tpr_at_fpr() -> None:
    clean = torch.arange(100, dtype=torch.float32)
    assert tpr_at_fpr(clean, torch.tensor([200.0, 200.0, 0.0, 0.0])) == 0.5
    assert math.isnan(tpr_at_fpr(clean, torch.zeros(0)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", DETECTORS)
def test_detectors_flag_five_percent_of_clean_validation_images(kind: str, trained: tuple[Classifier, Dataset]
                                                                ) -> None:
    model, ds = trained
    xt, yt = ds.split("train").get(range(120))
    xv, _ = ds.split("val").get(range(len(ds.split("val"))))
    det = fit_detector(kind, model, xt, yt, xv, eps=16 / 255)
    assert float(det.flag(xv).float().mean()) == pytest.approx(0.05, abs=0.03)
    x, y = ds.split("test").get(range(16))
    row = evaluate_detector(model, det, x, y, list(range(16)), 16 / 255, steps=5)
    assert 0.0 <= row.naive_auc <= 1.0 and row.attacked > 0


@pytest.mark.slow
def test_robust_objectives_train_and_their_robust_check_sees_an_attack(trained: tuple[Classifier, Dataset]) -> None:
    plain, ds = trained
    x, y = ds.split("val").get(range(32))
    # a do-nothing attack would leave robust accuracy at clean accuracy
    clean = float((plain.predict(x) == y).float().mean())
    assert robust_accuracy(plain, x, y, 32 / 255) < clean
    for method in ("pgd", "trades", "fgsm-rs", "noise"):
        cfg = TrainConfig(arch_kwargs={"width": 8}, epochs=1, batch_size=64, lr=1e-2)
        result = fit(ds, cfg, objective=RobustObjective(method=method, eps=8 / 255, steps=2, val_images=16))
        assert result.record["objective"]["method"] == method
        assert ("val_robust_accuracy" in result.history[0]) == (method != "noise")


def test_finding_words() -> None:
    masked = DefenceReport("JPEG", "input transform", 0.9, 0.92, [BudgetRow(8 / 255, 0.71, 0.2, 0.03, 0.0)], 100)
    assert "looks protective against a naive attacker (robust accuracy 71 %" in finding(masked)
    assert "drops it to 3 %" in finding(masked)
    holds = DefenceReport("PGD training", "robust training", 0.8, 0.9, [BudgetRow(8 / 255, 0.6, 0.62, 0.55, 0.0)], 100)
    assert "raises robust accuracy at 8/255 from 0 % undefended to 55 %" in finding(holds)


def test_smoothing_base_model_is_selected_on_noisy_validation_accuracy() -> None:
    ds = make_synthetic(seed=1, per_split=(192, 96, 30))
    objective = RobustObjective(method="noise", sigma=0.5)
    result = fit(ds, TrainConfig(arch_kwargs={"width": 4}, epochs=3, batch_size=64, lr=1e-2), objective=objective)
    noisy = [row["val_noisy_accuracy"] for row in result.history]
    best = max(range(len(noisy)), key=lambda i: (noisy[i], -result.history[i]["val_loss"])) + 1
    assert result.best_epoch == best and result.record["selected_on"] == "val_noisy_accuracy"
    # the weights kept are that epoch's: the same noisy check gives the recorded figure
    assert objective.validate(result.model, ds.split("val"))["val_noisy_accuracy"] == noisy[best - 1]
    assert noisy != [row["val_accuracy"] for row in result.history]  # measured under noise, not on clean images


@pytest.mark.parametrize("kind", ["lid", "kd-bu"])
def test_reference_images_are_not_scored_against_themselves_at_fit_time(
        kind: str, trained: tuple[Classifier, Dataset], monkeypatch: pytest.MonkeyPatch) -> None:
    """LID's reference set and KD's kernel bank hold training images; the images whose statistics
    fit the detector must not be among them (an image at distance 0 from itself looks maximally
    clean), else the fitted features differ from those of every image scored later."""
    model, ds = trained
    xt, yt = ds.split("train").get(range(120))
    xv, _ = ds.split("val").get(range(60))
    nearest: list[float] = []
    real_cdist = torch.cdist

    def spy(a: torch.Tensor, b: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if a.shape[0] and b.shape[0]:  # exact distances: matrix-product ones round close rows to 0
            exact = real_cdist(a.detach().double(), b.detach().double(), compute_mode="donot_use_mm_for_euclid_dist")
            nearest.append(float(exact.min()))
        return real_cdist(a, b, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "cdist", spy)
    fit_detector(kind, model, xt, yt, xv, eps=16 / 255)
    assert nearest and min(nearest) > 0, "a training image was scored against a reference set holding itself"


def test_detection_row_states_one_consistent_set_of_counts(trained: tuple[Classifier, Dataset]) -> None:
    model, ds = trained
    xt, yt = ds.split("train").get(range(120))
    xv, _ = ds.split("val").get(range(100))
    det = fit_detector("mahalanobis", model, xt, yt, xv, eps=16 / 255)
    x, y = ds.split("test").get(range(20))
    y = y.clone()
    y[:5] = (y[:5] + 1) % 3  # five images the model now gets wrong: sampled, not attacked
    correct = int((model.predict(x) == y).sum())
    row = evaluate_detector(model, det, x, y, list(range(20)), 16 / 255, steps=3).to_json()
    assert row["sampled"] == 20 and row["correct"] == correct == row["attacked"] and correct <= 15
    for stage in ("naive", "adaptive"):
        fooled, passed = row[f"{stage}_fooled"], row[f"{stage}_fooled_unflagged"]
        assert 0 <= passed <= fooled <= row["attacked"]
        if fooled:
            assert row[f"{stage}_tpr"] == pytest.approx(1 - passed / fooled)
        assert row[f"robust_{stage}"] == pytest.approx((row["correct"] - passed) / row["sampled"])
    assert row["adaptive_evade"] == pytest.approx(row["adaptive_fooled_unflagged"] / row["attacked"])
