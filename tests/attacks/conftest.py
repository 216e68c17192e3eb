"""Small trained models of every task type, shared by the attack tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medfool.data import load_dataset, make_synthetic
from medfool.data.split import stratified_split
from medfool.models import Classifier, ModelMeta, load_classifier, save_checkpoint
from medfool.models.train import TrainConfig, fit

FAST = TrainConfig(arch_kwargs={"width": 8}, epochs=4, batch_size=64, lr=1e-2)


@pytest.fixture(scope="session")
def multiclass() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    ds = make_synthetic(seed=1)
    model = fit(ds, FAST).model
    x, y = ds.split("test").get(range(24))
    return model, x, y


class _OneLogit(nn.Module):
    """z = z_pos - z_neg of a two-logit network: the same classifier with one output."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return z[:, 1:2] - z[:, 0:1]


@pytest.fixture(scope="session")
def binary_two_logit() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    ds = make_synthetic(task="binary", channels=1, seed=2)
    model = fit(ds, FAST).model
    x, y = ds.split("test").get(range(24))
    return model, x, y


@pytest.fixture(scope="session")
def binary_one_logit() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    ds = make_synthetic(task="binary", channels=1, seed=2)
    two = fit(ds, FAST).model
    meta = ModelMeta(**{**two.meta.__dict__, "num_outputs": 1, "arch": None, "arch_kwargs": {}})
    model = Classifier(_OneLogit(two.network), meta).eval()
    x, y = ds.split("test").get(range(24))
    return model, x, y


@pytest.fixture(scope="session")
def multilabel() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    ds = make_synthetic(task="multi-label", n_classes=4, seed=3)
    model = fit(ds, FAST).model
    x, y = ds.split("test").get(range(24))
    return model, x, y


def _trained(real_data: Path, name: str, tmp: Path, max_train: int | None, epochs: int | None) -> tuple:
    import os

    os.environ["MEDFOOL_DATA_DIR"] = str(real_data)
    ds = load_dataset(name)
    train = ds.split("train")
    if max_train and len(train) > max_train:
        keep = stratified_split(train.labels.numpy(), {"a": max_train / len(train), "b": 1 - max_train / len(train)},
                                0)["a"]
        train = train.subset(np.asarray(keep))
    result = fit(ds, TrainConfig(epochs=epochs), train_split=train)
    path = save_checkpoint(result.model, tmp / f"{name}.safetensors", result.record)
    model, _ = load_classifier(path)
    return model, ds


@pytest.fixture(scope="session")
def path_model(real_data, tmp_path_factory):
    """An undefended small CNN on the PathMNIST subset (about 30 s to train)."""
    return _trained(real_data, "pathmnist", tmp_path_factory.mktemp("m"), None, None)


@pytest.fixture(scope="session")
def lung_model(real_data, tmp_path_factory):
    """An undefended small CNN on 3,000 LC25000 lung tiles (about 30 s to train)."""
    return _trained(real_data, "lc25000_lung", tmp_path_factory.mktemp("m"), 3000, 8)
