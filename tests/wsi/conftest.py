"""Fixtures of the whole-slide tests: a small tile model on synthetic 64 px tiles whose classes
1 and 2 are named malignant."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from medfool.data import make_synthetic
from medfool.models.checkpoint import save_checkpoint
from medfool.models.train import TrainConfig, fit


@pytest.fixture(scope="session")
def tile_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    ds = make_synthetic(size=64, seed=0, per_split=(150, 30, 30))
    ds.info = replace(ds.info, critical_classes=(1, 2))
    model = fit(ds, TrainConfig(arch_kwargs={"width": 4}, epochs=3, batch_size=32, lr=1e-2, seed=0)).model
    path = save_checkpoint(model, tmp_path_factory.mktemp("tile") / "model.safetensors", {"dataset": "synthetic"})
    return path, ds
