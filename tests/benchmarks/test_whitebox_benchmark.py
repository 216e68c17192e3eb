"""benchmarks/whitebox.py measures a given model on the data it was trained for (and, like every
benchmark here, writes its figures under tmp_path, never into benchmarks/results/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "whitebox.py"


class Loaded(Exception):
    """Stops the benchmark once it has chosen its data."""


def _script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the scripts import benchmarks/record.py as `record`
    spec = importlib.util.spec_from_file_location("whitebox_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loaded_by(argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    module = _script(monkeypatch)
    names: list[str] = []

    def load(name: str, **_kw: object) -> None:
        names.append(name)
        raise Loaded

    monkeypatch.setattr(module, "load_dataset", load)
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv, "--json", str(tmp_path / "whitebox.json")])
    with pytest.raises(Loaded):
        module.main()
    assert len(names) == 1
    return names[0]


def test_a_given_model_is_measured_on_its_own_dataset(tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    assert _loaded_by(["--model", str(tiny_model)], monkeypatch, tmp_path) == "synthetic"  # not PathMNIST
    assert _loaded_by(["--model", str(tiny_model), "--dataset", "other"], monkeypatch, tmp_path) == "other"
    assert _loaded_by([], monkeypatch, tmp_path) == "pathmnist"  # no model: it trains one on the PathMNIST subset
