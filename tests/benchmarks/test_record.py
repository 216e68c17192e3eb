"""Every measuring benchmark writes its figures to a results file (benchmarks/record.py), so that
the tables of benchmarks/README.md can be traced to a file a script wrote; the tests write
theirs under tmp_path, never into benchmarks/results/."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
# not benchmarks: helpers, and a table renderer whose --json copies another run's figures
NOT_MEASURING = {"counting.py", "record.py", "defence_table.py"}


def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when a script runs: its folder is on sys.path
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_measuring_script_writes_a_results_file() -> None:
    scripts = sorted(p.name for p in BENCHMARKS.glob("*.py"))
    for name in sorted(set(scripts) - NOT_MEASURING):
        text = (BENCHMARKS / name).read_text()
        assert "from record import" in text and "write_results(" in text, f"{name} writes no results file"
        assert '"--json"' in text, f"{name} takes no --json"


def test_write_results_adds_the_command_environment_and_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    record = _load("record", monkeypatch)
    monkeypatch.setattr(sys, "argv", ["benchmarks/x.py", "--n", "2"])
    out = record.write_results("x_synthetic", {"rows": [{"wall_s": np.float32(1.5), "success": torch.tensor(0.25),
                                                         "l2": float("nan"), "shape": (1, 28)}]},
                               tmp_path / "sub" / "x.json")
    assert out == tmp_path / "sub" / "x.json"
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    data = json.loads(out.read_text())
    assert data["command"] == {"script": "x.py", "argv": ["benchmarks/x.py", "--n", "2"]}
    assert {"torch", "medfool", "python"} <= set(data["environment"])
    assert data["written"].endswith("+00:00")
    assert data["rows"] == [{"wall_s": 1.5, "success": 0.25, "l2": None, "shape": [1, 28]}]
    # without a path: beside the scripts, whatever the current directory
    assert record.default_path("x_synthetic") == BENCHMARKS / "results" / "x_synthetic.json"
    with pytest.raises(ValueError, match="command"):
        record.write_results("x", {"command": 1}, tmp_path / "y.json")


def test_a_tiny_benchmark_run_writes_its_table_where_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    before = sorted((BENCHMARKS / "results").glob("*"))
    module = _load("architectures", monkeypatch)
    out = tmp_path / "architectures.json"
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "architectures.py"), "--only", "small_cnn", "--size", "28",
                                      "--batch", "2", "--repeats", "1", "--json", str(out)])
    module.main()
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["arch"] == "small_cnn" and row["parameters"] > 0
    assert math.isfinite(row["forward_ms_per_image"]) and math.isfinite(row["forward_backward_ms_per_image"])
    assert sorted((BENCHMARKS / "results").glob("*")) == before
