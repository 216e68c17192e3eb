"""benchmarks/whitebox.py measures a given model on the data it was trained for."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "whitebox.py"


class Loaded(Exception):
    """Stops the benchmark once it has chosen its data."""


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("whitebox_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loaded_by(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    module = _script()
    names: list[str] = []

    def load(name: str, **_kw: object) -> None:
        names.append(name)
        raise Loaded

    monkeypatch.setattr(module, "load_dataset", load)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    with pytest.raises(Loaded):
        module.main()
    assert len(names) == 1
    return names[0]


def test_a_given_model_is_measured_on_its_own_dataset(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _loaded_by(["--model", str(tiny_model)], monkeypatch) == "synthetic"  # not PathMNIST
    assert _loaded_by(["--model", str(tiny_model), "--dataset", "other"], monkeypatch) == "other"
    assert _loaded_by([], monkeypatch) == "pathmnist"  # no model: it trains one on the PathMNIST subset
