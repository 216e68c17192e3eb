"""The demo never falls back to synthetic data silently."""

from __future__ import annotations

import json

import pytest

from medfool.cli.main import main


@pytest.mark.slow
def test_demo_without_data_says_so_loudly(tmp_path, monkeypatch, capsys, tiny_config):
    monkeypatch.delenv("MEDFOOL_DATA_DIR", raising=False)
    monkeypatch.setattr("medfool.runs.demo.DEMO_CONFIG",
                        __import__("medfool.models.train", fromlist=["TrainConfig"]).TrainConfig(
                            epochs=2, arch_kwargs={"width": 4}))
    code = main(["demo", "--data-dir", str(tmp_path / "empty"), "--no-download", "--out", str(tmp_path / "out"),
                 "--config", str(tiny_config)])  # small audit budgets: this test is about the missing data
    captured = capsys.readouterr()
    assert code == 0
    assert "NO REAL MEDICAL DATA FOUND" in captured.err
    assert "SYNTHETIC" in captured.out
    record = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert record["dataset"] == "synthetic" and record["seed"] == 0
    # the demo ends in the audit's report
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["meta"]["dataset"] == "synthetic" and results["summaries"]
    assert "report: " in captured.out and (tmp_path / "out" / "report.html").is_file()
