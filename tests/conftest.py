"""Shared fixtures: small files written on the fly, and the real data when it is there."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medfool.data import load_dataset, make_synthetic
from medfool.data.dicom import write_ct_phantoms
from medfool.data.split import stratified_split
from medfool.models import Classifier, ModelMeta, load_classifier, save_checkpoint
from medfool.models.train import TrainConfig, fit

torch.set_num_threads(min(2, torch.get_num_threads()))


def _real_data_dir() -> Path | None:
    for candidate in [os.environ.get("MEDFOOL_DATA_DIR", ""), str(Path(__file__).parents[2] / "shared" / "data")]:
        for part in candidate.split(os.pathsep):
            if part and (Path(part) / "medmnist" / "pathmnist.npz").is_file():
                return Path(part)
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    path = _real_data_dir()
    if path is None:
        pytest.skip("real data not found: set MEDFOOL_DATA_DIR to the folder with medmnist/ and lc25000/")
    return path


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A benchmark script run in-process silences logging globally; the next test must still see warnings."""
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's real cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


NpzFactory = Callable[..., Path]


@pytest.fixture
def make_npz(tmp_path: Path) -> NpzFactory:
    """Write a MedMNIST-layout .npz; keyword arrays override the defaults (None drops a key)."""

    def factory(name: str = "toy.npz", *, n: int = 40, channels: int = 3, size: int = 8, classes: int = 3,
                splits: tuple[str, ...] = ("train", "val", "test"), **override: object) -> Path:
        rng = np.random.default_rng(0)
        arrays: dict[str, object] = {}
        for s in splits:
            shape = (n, size, size) if channels == 1 else (n, size, size, channels)
            arrays[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
            arrays[f"{s}_labels"] = (np.arange(n) % classes).astype(np.uint8).reshape(n, 1)
        for key, value in override.items():
            if value is None:
                arrays.pop(key, None)
            else:
                arrays[key] = value
        path = tmp_path / name
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
        return path

    return factory


# -- a small trained model on disk and a small audit config (audit and report tests) ----------
# small budgets: every stage runs, in seconds
TINY = """\
n = 24
batch_size = 8
[corruptions]
severities = [1, 3, 5]
[whitebox]
ensemble = "fast"
eps = [1, 4, 16]
steps = 5
[blackbox]
attacks = ["square", "noise"]
queries = 5
[patch]
steps = 20
n_craft = 32
[onepixel]
pixels = [1]
n = 8
population = 20
generations = 3
[maps]
n = 2
samples = 0
"""


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A width-4 CNN trained for 2 epochs on the synthetic set (what ``-d synthetic`` loads)."""
    ds = make_synthetic(seed=0)
    model = fit(ds, TrainConfig(arch_kwargs={"width": 4}, epochs=2, batch_size=64, lr=1e-2, seed=0)).model
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_checkpoint(model, path, {"dataset": "synthetic"})
    return path


@pytest.fixture(scope="session")
def tiny_text() -> str:
    return TINY


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "audit.toml"
    path.write_text(TINY)
    return path


FailsCleanly = Callable[..., None]


@pytest.fixture
def fails_cleanly(capsys: pytest.CaptureFixture[str]) -> FailsCleanly:
    """Run the command line and check it failed as a user error should: exit code 2, one line
    'medfool: error: ...' matching ``pattern``, no traceback, and (with ``out``) nothing written."""
    import re

    from medfool.cli.main import main

    def check(argv: list[str], pattern: str, out: Path | None = None) -> None:
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2
        assert err[-1].startswith("medfool: error: ") and "Traceback" not in "\n".join(err)
        assert re.search(pattern, err[-1]), err[-1]
        if out is not None:
            assert not out.exists(), "nothing may be written on a user error"

    return check


# -- default-trained models on the real data (what users get), shared by every test directory --
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


# -- clinical files the tests write themselves (DICOM with pydicom) ------------------------------
DicomFactory = Callable[..., Path]


@pytest.fixture
def make_dicom_folder(tmp_path: Path) -> DicomFactory:
    """A class-per-folder tree of phantom CT slices (``medfool.data.dicom.write_ct_phantoms``)."""

    def factory(name: str = "ct", *, n: int = 12, size: int = 32, seed: int = 0) -> Path:
        return write_ct_phantoms(tmp_path / name, n=n, size=size, seed=seed)

    return factory


# -- small trained models of every task type (attack tests, the range's task-type test) --------
TASK_FAST = TrainConfig(arch_kwargs={"width": 8}, epochs=4, batch_size=64, lr=1e-2)


@pytest.fixture(scope="session")
def multiclass() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    ds = make_synthetic(seed=1)
    model = fit(ds, TASK_FAST).model
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
    model = fit(ds, TASK_FAST).model
    x, y = ds.split("test").get(range(24))
    return model, x, y


@pytest.fixture(scope="session")
def binary_one_logit() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    ds = make_synthetic(task="binary", channels=1, seed=2)
    two = fit(ds, TASK_FAST).model
    meta = ModelMeta(**{**two.meta.__dict__, "num_outputs": 1, "arch": None, "arch_kwargs": {}})
    model = Classifier(_OneLogit(two.network), meta).eval()
    x, y = ds.split("test").get(range(24))
    return model, x, y


@pytest.fixture(scope="session")
def multilabel() -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    ds = make_synthetic(task="multi-label", n_classes=4, seed=3)
    model = fit(ds, TASK_FAST).model
    x, y = ds.split("test").get(range(24))
    return model, x, y
