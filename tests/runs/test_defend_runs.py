"""Defence runs measure on held-out test images, never on the split that calibrated or selected."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfool.data import make_synthetic
from medfool.data.dataset import Dataset
from medfool.errors import DataError
from medfool.models import load_classifier
from medfool.runs.defend import DefenceRun, Defended, run_certify, run_detectors, run_evaluate

RUNS = {
    "detector": lambda run, d: run_detectors(run, d, ["mahalanobis"], n_train=30, steps=2),
    "evaluate": lambda run, d: run_evaluate(run, None, [d]),
    "certify": lambda run, d: run_certify(run, d, 0.25, [0.0], n0=4, samples=8),
}


@pytest.mark.parametrize("kind", RUNS)
def test_a_dataset_without_a_test_split_is_refused(kind: str, tiny_model: Path, tmp_path: Path) -> None:
    full = make_synthetic(seed=0)
    no_test = Dataset(full.info, {"train": full.split("train"), "val": full.split("val")})
    model, _ = load_classifier(tiny_model)
    run = DefenceRun(no_test, tmp_path / "out", eps=(8 / 255,), n=8, eot=1)
    with pytest.raises(DataError, match=r"synthetic has no test split.*val split"):
        RUNS[kind](run, Defended("tiny", "model", model, "digest"))
    assert not (tmp_path / "out").exists()


def test_detector_threshold_images_are_drawn_from_every_class(tiny_model: Path, tmp_path: Path) -> None:
    """A val split stored class by class (LC25000's is) must not give a threshold set on the
    clean images of one class: the images are drawn with the seed, and their classes recorded."""
    import json

    import numpy as np

    full = make_synthetic(seed=0)
    val = full.split("val")
    by_class = full.split("val").subset(np.argsort(val.labels.numpy(), kind="stable"))
    ordered = Dataset(full.info, {"train": full.split("train"), "val": by_class, "test": full.split("test")})
    model, _ = load_classifier(tiny_model)
    run = DefenceRun(ordered, tmp_path / "out", eps=(8 / 255,), n=8, eot=1)
    n_val = len(by_class) // 4  # the first quarter of the stored split holds one class only
    assert len(set(by_class.labels[:n_val].tolist())) == 1
    run_detectors(run, Defended("tiny", "model", model, "digest"), ["mahalanobis"], n_train=30, n_val=n_val, steps=2)
    recorded = json.loads((tmp_path / "out" / "detectors.json").read_text())["settings"]["threshold_images"]
    assert recorded["n"] == n_val
    assert sum(recorded["per_class"].values()) == n_val
    assert all(c > 0 for c in recorded["per_class"].values()), recorded
