"""Black-box commands end to end: export to ONNX, attack the export, labels only, transfer,
fooling images, and their user errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medfool.cli.main import main


def _fails_cleanly(argv, capsys, pattern):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("medfool: error: ") and "Traceback" not in "\n".join(err)
    assert re.search(pattern, err[-1]), err[-1]


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


def test_black_box_user_errors(tiny_model: Path, tmp_path: Path, capsys):
    fake = tmp_path / "bad.onnx"
    fake.write_bytes(b"not a model")
    (tmp_path / "bad.json").write_text(json.dumps({"task": "multi-class", "class_names": ["a", "b", "c"],
                                                   "input_shape": [3, 28, 28], "mean": [0, 0, 0],
                                                   "std": [1, 1, 1], "num_outputs": 3}))
    base = ["-d", "synthetic", "--n", "4", "--out", str(tmp_path / "o")]
    _fails_cleanly(["attack", "pgd", "-m", str(fake), *base], capsys, "pgd needs gradients")
    _fails_cleanly(["attack", "pgd", "-m", str(tiny_model), "--queries", "10", *base], capsys,
                   "--queries is the budget of black-box attacks")
    _fails_cleanly(["attack", "transfer", "-m", str(tiny_model), *base], capsys, "transfer needs --surrogate")
    _fails_cleanly(["attack", "square", "-m", str(tiny_model), "--queries", "1", *base], capsys,
                   "queries must be an integer >= 2")
    _fails_cleanly(["attack", "fooling", "-m", str(tiny_model), "-o", "encoding=dna", *base], capsys,
                   "encoding must be one of direct, cppn")
    _fails_cleanly(["export", "-m", str(tiny_model), "--out", str(tmp_path / "m.pt")], capsys, "must end in .onnx")
    if __import__("importlib").util.find_spec("onnxruntime"):
        _fails_cleanly(["attack", "square", "-m", str(fake), *base], capsys, r"bad\.onnx: not a readable ONNX model")
