"""Multi-label chest X-ray layout (ChestMNIST: 14 findings, grayscale 28 px), model trained
with medfool's defaults: the score-based search beats random noise, and the margin loss is as
good a PGD objective as the cross-entropy (the wrong-sign margin made both fail)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medfool.attacks import get_attack
from medfool.data import load_dataset, make_synthetic
from medfool.models.train import TrainConfig, fit

pytestmark = pytest.mark.slow

FINDINGS = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
            "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia")
BUDGETS = (2, 4, 8)


@pytest.fixture(scope="module")
def chest(tmp_path_factory: pytest.TempPathFactory):
    """A ChestMNIST-layout npz (images (N, 28, 28) uint8, labels (N, 14) 0/1) and its sidecar,
    loaded as a user's file, and the model `medfool train` gives with its defaults."""
    tmp = tmp_path_factory.mktemp("chest")
    ds = make_synthetic(task="multi-label", n_classes=14, channels=1, seed=0, per_split=(600, 100, 100))
    arrays = {}
    for s in ("train", "val", "test"):
        x, y = ds.split(s).tensors()
        arrays[f"{s}_images"] = (x[:, 0].numpy() * 255).round().astype(np.uint8)
        arrays[f"{s}_labels"] = y.numpy().astype(np.uint8)
    path = Path(tmp) / "chestlike.npz"
    np.savez(path, **arrays)
    path.with_suffix(".json").write_text(json.dumps({"name": "chestlike", "task": "multi-label", "n_channels": 1,
                                                     "label": {str(i): n for i, n in enumerate(FINDINGS)}}))
    data = load_dataset(str(path))
    model = fit(data, TrainConfig(seed=0)).model.eval()
    x, y = data.split("test").get(np.arange(64))
    return model, x, y


def _rate(model, name: str, x: torch.Tensor, y: torch.Tensor, **opts) -> float:
    r = get_attack(name, **opts)(model, x, y, seed=0, ids=list(range(len(x))))
    assert float(r.linf.max()) <= opts["eps"] + 1e-6
    return float((r.success & r.clean_correct).sum() / r.clean_correct.sum().clamp_min(1))


def test_square_beats_noise_at_every_budget(chest):
    model, x, y = chest
    for k in BUDGETS:
        square = _rate(model, "square", x, y, eps=k / 255, queries=500)
        noise = _rate(model, "noise", x, y, eps=k / 255, tries=500)
        print(f"{k}/255: square {square:.3f} noise {noise:.3f}")
        assert square >= noise, (k, square, noise)
    assert square > 0.5  # at 8/255 the search finds most images (a do-nothing attack fails here)


def test_pgd_margin_is_within_five_points_of_cross_entropy(chest):
    model, x, y = chest
    for k in BUDGETS:
        ce = _rate(model, "pgd", x, y, eps=k / 255, steps=10, loss="ce")
        margin = _rate(model, "pgd", x, y, eps=k / 255, steps=10, loss="margin")
        print(f"{k}/255: pgd-ce {ce:.3f} pgd-margin {margin:.3f}")
        assert margin >= ce - 0.05, (k, ce, margin)
