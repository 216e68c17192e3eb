"""``medfool wsi predict``: the slide's answer comes from the pipeline read from the file, and a
tile model that says "malignant" on the cancer tiles makes the malignant slide read malignant."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tiffslide")

from medfool.models.features import deep_features
from medfool.wsi.aggregate import AttentionMIL, aggregate, malignancy, train_attention
from medfool.wsi.build import MosaicSpec, build_slides


def test_predict_reads_the_malignant_region(tile_model, tmp_path: Path, fails_cleanly) -> None:
    from medfool.cli.main import main

    path, ds = tile_model
    build_slides(ds.split("test"), "test", ds.info.class_names, 0, (1, 2), tmp_path / "slides", n_benign=1,
                 n_malignant=1, spec=MosaicSpec(side=1024, tile=64, cancer=0.3), compression="lossless", seed=0)
    answers = {}
    for name in ("test_000_benign.tif", "test_001_malignant.tif"):
        out = tmp_path / name
        assert main(["wsi", "predict", str(tmp_path / "slides" / name), "-m", str(path), "--out", str(out),
                     "--aggregator", "mean", "--device", "cpu"]) == 0
        answers[name] = json.loads((out / "prediction.json").read_text())
        assert (out / "heatmap.png").stat().st_size > 1000
    benign, malignant = answers["test_000_benign.tif"], answers["test_001_malignant.tif"]
    assert benign["tiles"] > 50 and malignant["probability_malignant"] > benign["probability_malignant"]
    fails_cleanly(["wsi", "predict", str(tmp_path / "missing.tif"), "-m", str(path), "--out", str(tmp_path / "o")],
                  "no such slide file", out=tmp_path / "o")


def test_aggregators_and_attention_mil(tile_model) -> None:
    from medfool.models import load_classifier

    path, ds = tile_model
    model, _ = load_classifier(str(path))
    x, y = ds.split("train").tensors()
    benign, cancer = x[y == 0][:20], x[y == 1][:20]
    m_b, m_c = malignancy(model, benign), malignancy(model, cancer)
    assert float(m_c.mean()) > float(m_b.mean())
    slide_b = benign
    slide_m = torch.cat([benign[:15], cancer[:5]])
    with torch.no_grad():
        top, mean = aggregate("max", model, slide_m), aggregate("mean", model, slide_m)
    assert float(top.probability) >= float(mean.probability)
    # attention MIL trained on bags with slide labels only
    gen = torch.Generator().manual_seed(0)
    bags, labels = [], []
    for i in range(16):
        pick_b = torch.randint(0, benign.shape[0], (12,), generator=gen)
        bag = benign[pick_b]
        if i % 2:
            bag = torch.cat([bag[:9], cancer[torch.randint(0, cancer.shape[0], (3,), generator=gen)]])
        with torch.no_grad():
            bags.append(deep_features(model, bag))
        labels.append(i % 2)
    mil = train_attention(bags, labels, epochs=30, seed=0)
    assert isinstance(mil, AttentionMIL)
    with torch.no_grad():
        p = [float(torch.sigmoid(mil(b)[0])) for b in bags]
    accuracy = np.mean([(q >= 0.5) == bool(lab) for q, lab in zip(p, labels, strict=True)])
    assert accuracy >= 0.9
    with torch.no_grad():
        out = aggregate("attention", model, slide_b, mil)
    assert out.tile_scores.shape == (20,) and abs(float(out.tile_scores.sum()) - 1) < 1e-5


def test_wsi_train_then_predict_with_the_slide_model(tile_model, tmp_path: Path, fails_cleanly) -> None:
    from medfool.cli.main import main

    path, ds = tile_model
    for split, folder in (("train", "tr"), ("val", "va")):
        build_slides(ds.split(split), split, ds.info.class_names, 0, (1, 2), tmp_path / folder, n_benign=3,
                     n_malignant=3, spec=MosaicSpec(side=512, tile=64, cancer=0.3), compression="lossless", seed=1)
    out = tmp_path / "sm"
    assert main(["wsi", "train", str(tmp_path / "tr"), "-m", str(path), "--val", str(tmp_path / "va"),
                 "--epochs", "20", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_slides"] == 6 and metrics["val_slides"] == 6
    assert metrics["train_accuracy"] >= 5 / 6  # the bags separate: the head learnt the slide labels
    assert main(["wsi", "predict", str(tmp_path / "va" / "val_005_malignant.tif"), "-m", str(out),
                 "--out", str(tmp_path / "p"), "--device", "cpu"]) == 0
    pred = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert pred["aggregator"] == "attention"
    (out / "attention.safetensors").write_bytes(b"not weights")
    fails_cleanly(["wsi", "predict", str(tmp_path / "va" / "val_005_malignant.tif"), "-m", str(out),
                   "--out", str(tmp_path / "p2")], r"attention\.safetensors: not the attention head",
                  out=tmp_path / "p2")
