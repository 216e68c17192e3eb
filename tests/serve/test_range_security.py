"""The range's HTTP service refuses what it must (no key 401, wrong key 403, oversize 413,
malformed image 422, over rate or budget 429 with Retry-After), answers in both dialects, and
logs every image it answered, and only those."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from medfool.models import load_classifier
from medfool.serve.app import create_app
from medfool.serve.keys import KeyStore, new_key
from medfool.serve.limits import Limits
from medfool.serve.querylog import QueryLog


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served(tiny_model: Path, tmp_path: Path) -> tuple[TestClient, str, QueryLog, Clock, torch.nn.Module]:
    model, _ = load_classifier(str(tiny_model))
    key, record = new_key("red-team")
    KeyStore.append(tmp_path / "keys.jsonl", record)
    clock = Clock()
    log = QueryLog(tmp_path / "queries.sqlite")
    app = create_app(model, KeyStore.load(tmp_path / "keys.jsonl"), Limits(rate=1.0, burst=3, daily=5, clock=clock),
                     log, max_bytes=200_000)
    return TestClient(app), key, log, clock, model


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


IMG = (np.random.default_rng(0).random((28, 28, 3)) * 255).astype(np.uint8)


def test_keys_are_checked_and_hashed_at_rest(served, tmp_path: Path) -> None:
    client, key, log, _, _ = served
    files = {"image": ("x.png", _png(IMG), "image/png")}
    assert client.post("/model/predict", files=files).status_code == 401
    assert client.post("/model/predict", files=files, headers={"X-API-Key": key + "x"}).status_code == 403
    assert client.post("/model/predict", files=files, headers={"X-API-Key": "mf_00000000_nope"}).status_code == 403
    assert key.split("_", 2)[2] not in (tmp_path / "keys.jsonl").read_text()  # the secret is not stored
    assert log.count() == 0  # nothing refused is logged


def test_oversize_and_malformed_are_refused(served) -> None:
    client, key, log, _, _ = served
    h = {"X-API-Key": key}
    big = {"image": ("x.png", b"\x89PNG\r\n\x1a\n" + b"0" * 210_000, "image/png")}
    assert client.post("/model/predict", files=big, headers=h).status_code == 413
    for junk in (b"not an image", b"\x89PNG\r\n\x1a\nbroken", _png(IMG[:10])):  # wrong bytes, broken PNG, wrong size
        r = client.post("/model/predict", files={"image": ("x.png", junk, "image/png")}, headers=h)
        assert r.status_code == 422, r.text
        assert r.json()["status"] == "error"
    assert client.post("/model/predict", content=b"{}", headers=h).status_code == 422  # no multipart at all
    bad_v2 = [{"inputs": [{"name": "image", "shape": [1, 3, 28, 28], "datatype": "FP32", "data": [2.0] * 2352}]},
              {"inputs": [{"name": "image", "shape": [1, 3, 28, 28], "datatype": "FP32", "data": [0.5] * 5}]},
              {"nothing": 1}]
    for body in bad_v2:
        assert client.post("/v2/models/medfool/infer", json=body, headers=h).status_code == 422
    assert log.count() == 0


def test_rate_and_budget_give_429_with_retry_after(served) -> None:
    client, key, log, clock, _ = served
    h = {"X-API-Key": key}
    files = {"image": ("x.png", _png(IMG), "image/png")}
    codes = [client.post("/model/predict", files=files, headers=h).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]  # a burst of 3
    r = client.post("/model/predict", files=files, headers=h)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    clock.now += 10  # the bucket refills; the daily budget of 5 is what is left to spend
    codes = [client.post("/model/predict", files=files, headers=h).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = client.post("/model/predict", files=files, headers=h)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 3600  # the budget: until the next UTC day
    assert log.count() == 5  # exactly the answered images


def test_both_dialects_answer_the_models_probabilities(served) -> None:
    client, key, log, _, model = served
    h = {"Authorization": f"Bearer {key}"}
    r = client.post("/model/predict", files={"image": ("x.png", _png(IMG), "image/png")}, headers=h)
    assert r.status_code == 200
    got = [p["probability"] for p in r.json()["predictions"]]
    x = torch.from_numpy(IMG.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = model.probabilities(x)[0].tolist()
    assert got == pytest.approx(want, abs=1e-6)
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/medfool").status_code == 401  # what the model is, only to key holders
    meta = client.get("/v2/models/medfool", headers=h).json()
    assert meta["inputs"][0]["shape"] == [-1, 3, 28, 28]
    assert meta["parameters"]["task"] == "multi-class"
    body = {"inputs": [{"name": "image", "shape": [2, 3, 28, 28], "datatype": "FP32",
                        "data": torch.cat([x, x]).flatten().tolist()}]}
    r = client.post("/v2/models/medfool/infer", content=json.dumps(body), headers=h)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 3] and out["data"][:3] == pytest.approx(want, abs=1e-6)
    assert log.count() == 3  # one row per image answered
    assert client.get("/openapi.json").status_code == 200
