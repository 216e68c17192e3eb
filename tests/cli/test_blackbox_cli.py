"""Black-box commands end to end: export to ONNX, attack the export, labels only, transfer,
fooling images, and their user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfool.cli.main import main


def test_export_then_attack_the_onnx_file(tiny_model: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime", reason="pip install 'medfool[onnx]'")
    pytest.importorskip("onnx", reason="pip install 'medfool[onnx]'")
    onnx = tmp_path / "m.onnx"
    assert main(["export", "-m", str(tiny_model), "--out", str(onnx)]) == 0
    assert onnx.is_file() and (tmp_path / "m.json").is_file()
    out = tmp_path / "sq"
    assert main(["attack", "square", "-m", str(onnx), "-d", "synthetic", "--queries", "30", "--n", "8",
                 "--eps", "16/255", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert max(r["queries"] for r in data["images"]) <= 30 and data["summaries"][0]["n"] == 8
    assert (out / "grid.png").is_file()


@pytest.mark.slow
def test_labels_only_transfer_and_fooling(tiny_model: Path, tmp_path: Path):
    out = tmp_path / "hsj"
    assert main(["attack", "hsj", "-m", str(tiny_model), "-d", "synthetic", "--labels-only", "--queries", "60",
                 "-o", "init_evals=10", "--n", "6", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["images"]
    assert max(r["queries"] for r in rows) <= 60 and all(r["gradients"] == 0 for r in rows)
    out = tmp_path / "tr"
    assert main(["attack", "transfer", "-m", str(tiny_model), "--surrogate", str(tiny_model), "-d", "synthetic",
                 "--eps", "16/255", "-o", "steps=5", "--n", "8", "--out", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["transfer_rate"] in (1.0, None)  # the same model: everything that fools it transfers
    out = tmp_path / "fool"
    assert main(["attack", "fooling", "-m", str(tiny_model), "-d", "synthetic", "--queries", "2000",
                 "-o", "generations=40", "-o", "samples=8", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["summary"]["queries"] <= 2000 and len(data["summary"]["best_confidence"]) == 3
    assert (out / "fooling_direct.png").is_file() and (out / "fooling_direct.npz").is_file()


def test_black_box_user_errors(tiny_model: Path, tmp_path: Path, capsys, fails_cleanly):
    fake = tmp_path / "bad.onnx"
    fake.write_bytes(b"not a model")
    (tmp_path / "bad.json").write_text(json.dumps({"task": "multi-class", "class_names": ["a", "b", "c"],
                                                   "input_shape": [3, 28, 28], "mean": [0, 0, 0],
                                                   "std": [1, 1, 1], "num_outputs": 3}))
    base = ["-d", "synthetic", "--n", "4", "--out", str(tmp_path / "o")]
    fails_cleanly(["attack", "pgd", "-m", str(fake), *base], "pgd needs gradients")
    fails_cleanly(["attack", "pgd", "-m", str(tiny_model), "--queries", "10", *base],
                   "--queries is the budget of black-box attacks")
    fails_cleanly(["attack", "transfer", "-m", str(tiny_model), *base], "transfer needs --surrogate")
    fails_cleanly(["attack", "square", "-m", str(tiny_model), "--queries", "1", *base],
                   "queries must be an integer >= 2")
    fails_cleanly(["attack", "fooling", "-m", str(tiny_model), "-o", "encoding=dna", *base],
                   "encoding must be one of direct, cppn")
    fails_cleanly(["export", "-m", str(tiny_model), "--out", str(tmp_path / "m.pt")], "must end in .onnx")
    if __import__("importlib").util.find_spec("onnxruntime"):
        fails_cleanly(["attack", "square", "-m", str(fake), *base], r"bad\.onnx: not a readable ONNX model")
