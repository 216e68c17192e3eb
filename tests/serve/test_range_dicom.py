"""DICOM uploads: a CT slice goes through its modality LUT and a window to the model's [0, 1]
input; the answer is the model's on that image, and what cannot be read is a 422 with one line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from medfool.data import make_synthetic
from medfool.data.dicom import write_ct_slice
from medfool.data.windowing import Window
from medfool.models.train import TrainConfig, fit
from medfool.serve.app import create_app
from medfool.serve.keys import KeyStore, new_key
from medfool.serve.limits import Limits
from medfool.serve.querylog import QueryLog


@pytest.fixture
def grey_range(tmp_path: Path) -> tuple[TestClient, str, torch.nn.Module, Path]:
    model = fit(make_synthetic(channels=1, seed=0), TrainConfig(arch_kwargs={"width": 4}, epochs=1, seed=0)).model
    key, record = new_key("reader")
    app = create_app(model, KeyStore([record]), Limits(1e6, 10**6, 0), QueryLog(tmp_path / "q.sqlite"))
    return TestClient(app), key, model, tmp_path


def test_a_ct_slice_is_windowed_and_answered(grey_range) -> None:
    client, key, model, tmp = grey_range
    hu = np.random.default_rng(0).uniform(-160, 240, (28, 28))
    path = write_ct_slice(tmp / "slice.dcm", hu, window=(40.0, 400.0))
    r = client.post("/model/predict", files={"image": ("slice.dcm", path.read_bytes())}, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    got = [p["probability"] for p in r.json()["predictions"]]
    stored = np.rint(hu + 1024) - 1024  # 12-bit integers on disk
    x = torch.from_numpy(np.clip((stored - Window(40, 400).low) / 400, 0, 1).astype(np.float32))[None, None]
    with torch.no_grad():
        want = model.probabilities(x)[0].tolist()
    assert got == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: write_ct_slice(p, np.zeros((28, 28)), window=None), "states no window"),
    (lambda p: write_ct_slice(p, np.zeros((32, 32))), r"DICOM: the image is 32 x 32; the model takes 28 x 28"),
    (lambda p: p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage"),
     r"DICOM: .*(unreadable|no pixel data|no readable Rows)"),
])
def test_unreadable_dicom_is_a_422_in_one_line(grey_range, make, message: str) -> None:
    client, key, _, tmp = grey_range
    path = tmp / "bad.dcm"
    make(path)
    r = client.post("/model/predict", files={"image": ("bad.dcm", path.read_bytes())}, headers={"X-API-Key": key})
    assert r.status_code == 422
    err = r.json()["error"]
    assert "\n" not in err and str(tmp) not in err
    assert re.search(message, err), err


def test_a_defence_is_served_in_front_of_the_model(tiny_model: Path) -> None:
    from medfool.cli.defend import parse_transform
    from medfool.serve.run import RangeJob, served_model

    model = served_model(RangeJob(str(tiny_model), transforms=(parse_transform("median:size=3"),), device="cpu"))
    assert [s["name"] for s in model.meta.preprocess][-1] == "median"
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    plain = served_model(RangeJob(str(tiny_model), device="cpu"))
    with torch.no_grad():
        assert not torch.allclose(model(x), plain(x))  # the served answers go through the defence
