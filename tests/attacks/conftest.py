"""Small trained models of every task type, shared by the attack tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medfool.data import make_synthetic
from medfool.models import Classifier, ModelMeta
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
