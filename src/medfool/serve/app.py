"""The range's HTTP service (FastAPI), in two dialects:

* the MAX style of IBM's Model Asset Exchange (the mitosis detector Korpihalkola et al. attacked):
  ``POST /model/predict`` with a multipart field ``image`` (PNG or NPY), answering
  ``{"status": "ok", "predictions": [...]}`` (PNG, NPY or DICOM);
* KServe's Open Inference Protocol v2: ``GET /v2/health/ready``, ``GET /v2/models/{name}``,
  ``POST /v2/models/{name}/infer`` with an FP32 tensor N x C x H x W in [0, 1].

Every prediction needs an API key (``X-API-Key`` or ``Authorization: Bearer``): none 401, a
wrong one 403. A body over ``max_bytes`` is refused with 413, an unreadable image with 422, a key
over its rate or daily budget with 429 and Retry-After. Each image answered is first committed to
the query log.

A stateful detector (:mod:`medfool.defences.stateful`) may watch the stream: with
``on_detect="reject"`` a flagged image gets no answer (MAX: ``"status": "rejected"``; v2: its row
of probabilities is -1 and the output ``rejected`` is true), with ``"flag"`` it is answered and
only the log knows. A caller may name its run in the header ``X-Run-Id`` (letters, digits,
``._-``, at most 64), which the log keeps beside each query.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any, Literal

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from medfool.data.windowing import Window
from medfool.defences.stateful import StatefulDetector
from medfool.models.classifier import Classifier
from medfool.serve.decode import BadImage, decode_image, from_array
from medfool.serve.keys import KeyStore
from medfool.serve.limits import Limits
from medfool.serve.querylog import QueryLog
from medfool.vocab import MULTI_LABEL

__all__ = ["Answer", "OnDetect", "Service", "create_app"]

Answer = Literal["probs", "rounded", "label"]
OnDetect = Literal["reject", "flag"]
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{0,64}")


class Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class Service:
    """What the routes share: the model (in eval mode; one forward at a time), the keys, the
    limits, the log, the detector and the answer's form."""

    def __init__(self, model: Classifier, keys: KeyStore, limits: Limits, log: QueryLog, *, name: str,
                 answer: Answer, max_bytes: int, max_batch: int, detector: StatefulDetector | None = None,
                 on_detect: OnDetect = "reject", window: Window | None = None) -> None:
        self.model, self.keys, self.limits, self.log = model.eval(), keys, limits, log
        self.name, self.answer, self.max_bytes, self.max_batch = name, answer, max_bytes, max_batch
        self.detector, self.on_detect, self.window = detector, on_detect, window
        # a request larger than the token bucket could never be served: refuse it (413) at once
        self.batch_limit = max(1, min(max_batch, limits.burst))
        self.shape: tuple[int, int, int] = tuple(model.meta.input_shape)  # type: ignore[assignment]
        self.classes = list(model.class_names)
        self.lock = threading.Lock()

    def caller(self, request: Request) -> str:
        """The key's name: none given 401, a wrong one 403."""
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given:
            raise Refused(401, "an API key is needed (X-API-Key or Authorization: Bearer)")
        who = self.keys.check(given)
        if who is None:
            raise Refused(403, "this API key is not valid")
        return who

    def check_size(self, n_bytes: int | str | None) -> None:
        n = int(n_bytes) if isinstance(n_bytes, int) or (isinstance(n_bytes, str) and n_bytes.isdigit()) else 0
        if n > self.max_bytes:
            raise Refused(413, f"the request is {n:,} bytes; at most {self.max_bytes:,}")

    @staticmethod
    def run_id(request: Request) -> str:
        run = request.headers.get("x-run-id") or ""
        if not _RUN_ID.fullmatch(run):
            raise Refused(422, "X-Run-Id: at most 64 letters, digits, '.', '_' or '-'")
        return run

    def answer_for(self, x: torch.Tensor, who: str, run: str = "") -> tuple[list[Any], list[bool]]:
        """Spend the key's queries (429 over them), let the detector judge, predict, log every
        image, then answer: one answer per image (None where rejected) and the rejected mask."""
        if x.shape[0] > self.batch_limit:
            raise Refused(413, f"{x.shape[0]} images in one request; at most {self.batch_limit}")
        wait, scope = self.limits.take_scoped(who, x.shape[0])
        if wait:
            what = "daily budget is spent" if scope == "daily" else "rate is exceeded"
            raise Refused(429, f"this key's {what}; retry in {wait:g} s",
                          {"Retry-After": str(max(1, int(wait + 0.999))), "X-RateLimit-Scope": scope})
        with self.lock, torch.no_grad():
            flagged = self.detector.observe(x, who) if self.detector is not None else [False] * x.shape[0]
            probs = self.model.probabilities(x.to(self.model.device)).cpu()
        if self.answer == "label":
            out: list[Any] = ((probs > 0.5).long() if self.model.task == MULTI_LABEL else probs.argmax(1)).tolist()
        elif self.answer == "rounded":
            out = [[round(p, 2) for p in row] for row in probs.tolist()]
        else:
            out = probs.tolist()
        rejected = [f and self.on_detect == "reject" for f in flagged]
        out = [None if r else a for a, r in zip(out, rejected, strict=True)]
        verdicts = ["none" if self.detector is None else ("reject" if r else "flag" if f else "pass")
                    for f, r in zip(flagged, rejected, strict=True)]
        digests = [hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in x]
        self.log.append(who, digests, out, verdicts, run)
        return out, rejected

    async def predict(self, request: Request) -> dict[str, Any]:
        """The MAX dialect: one image in the multipart field ``image``."""
        who = self.caller(request)
        run = self.run_id(request)
        self.check_size(request.headers.get("content-length"))
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=self.max_bytes)
        except Exception as exc:  # noqa: BLE001 -- starlette's parser errors: a malformed body
            raise Refused(422, f"expected multipart form data with a field 'image' ({exc})") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise Refused(422, "expected a file in the multipart field 'image'")
        data = await upload.read()
        self.check_size(len(data))
        try:
            x = decode_image(data, self.shape, self.window)
        except BadImage as exc:
            raise Refused(422, str(exc)) from None
        answers, rejected = self.answer_for(x, who, run)
        out = answers[0]
        if rejected[0]:
            return {"status": "rejected", "error": "the query was refused by the service's attack detection"}
        if isinstance(out, int):
            return {"status": "ok", "predictions": [{"label": self.classes[out]}]}
        if self.answer == "label":  # multi-label: the labels present
            return {"status": "ok", "predictions": [{"label": c} for c, v in zip(self.classes, out, strict=True) if v]}
        return {"status": "ok",
                "predictions": [{"label": c, "probability": p} for c, p in zip(self.classes, out, strict=True)]}

    def metadata(self) -> dict[str, Any]:
        label = self.answer == "label"
        return {"name": self.name, "platform": "pytorch", "versions": ["1"],
                "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, *self.shape]}],
                "outputs": [{"name": "label" if label else "probabilities", "datatype": "INT64" if label else "FP32",
                             "shape": [-1] if label else [-1, len(self.classes)]},
                            {"name": "rejected", "datatype": "BOOL", "shape": [-1]}],
                "parameters": {"classes": self.classes, "task": self.model.task, "max_batch": self.batch_limit}}

    async def infer(self, request: Request) -> dict[str, Any]:
        """Open Inference Protocol v2: one FP32 input tensor N x C x H x W, values in [0, 1]."""
        who = self.caller(request)
        run = self.run_id(request)
        self.check_size(request.headers.get("content-length"))
        body = await request.body()
        self.check_size(len(body))
        x = _v2_input(body, self.shape)
        out, rejected = self.answer_for(x, who, run)
        n, k = x.shape[0], len(self.classes)
        flags = {"name": "rejected", "datatype": "BOOL", "shape": [n], "data": rejected}
        if self.answer == "label":
            per = k if self.model.task == MULTI_LABEL else 1
            labels = [v for a in out for v in ([-1] * per if a is None else a if isinstance(a, list) else [a])]
            return {"model_name": self.name, "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [n, k] if per > 1 else [n], "data": labels}, flags]}
        flat = [p for row in out for p in (row if row is not None else [-1.0] * k)]
        return {"model_name": self.name, "outputs": [{"name": "probabilities", "datatype": "FP32",
                                                      "shape": [n, k], "data": flat}, flags]}


def create_app(model: Classifier, keys: KeyStore, limits: Limits, log: QueryLog, *, name: str = "medfool",
               answer: Answer = "probs", max_bytes: int = 4 << 20, max_batch: int = 64,
               detector: StatefulDetector | None = None, on_detect: OnDetect = "reject",
               window: Window | None = None) -> FastAPI:
    """The service around ``model``, its routes and its OpenAPI schema."""
    app = FastAPI(title="medfool range", description=__doc__, version="1")
    service = Service(model, keys, limits, log, name=name, answer=answer, max_bytes=max_bytes, max_batch=max_batch,
                      detector=detector, on_detect=on_detect, window=window)

    @app.exception_handler(Refused)
    async def refused(_request: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"status": "error", "error": exc.detail}, status_code=exc.status, headers=exc.headers)

    def known(model_name: str) -> None:
        if model_name != name:
            raise Refused(404, f"no model {model_name!r} here (this range serves {name!r})")

    @app.post("/model/predict", openapi_extra=_MAX_BODY)
    async def predict(request: Request) -> dict[str, Any]:
        """The MAX dialect: one image (PNG or NPY) in the multipart field ``image``."""
        return await service.predict(request)

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.get("/v2/models/{model_name}")
    async def metadata(model_name: str, request: Request) -> dict[str, Any]:
        """The model's input, outputs, classes and task (a key is needed: what the model is is not public)."""
        service.caller(request)
        known(model_name)
        return service.metadata()

    @app.post("/v2/models/{model_name}/infer", openapi_extra=_V2_BODY)
    async def infer(model_name: str, request: Request) -> dict[str, Any]:
        """Open Inference Protocol v2: one FP32 input tensor N x C x H x W, values in [0, 1]."""
        service.caller(request)  # an unknown model name is not told to a caller without a key
        known(model_name)
        return await service.infer(request)

    return app


_MAX_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary", "description": "PNG, NPY or DICOM"}}}}}}}
_V2_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["inputs"],
    "properties": {"inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
        "type": "object", "required": ["name", "shape", "datatype", "data"],
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string", "enum": ["FP32"]},
                       "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4},
                       "data": {"type": "array", "items": {"type": "number"}}}}}}}}}}}


def _v2_input(body: bytes, shape: tuple[int, int, int]) -> torch.Tensor:
    import json

    import numpy as np

    try:
        req = json.loads(body)
        (inp,) = req["inputs"]
        if inp.get("datatype") != "FP32":
            raise BadImage(f"datatype must be FP32, got {inp.get('datatype')!r}")
        dims = [int(d) for d in inp["shape"]]
        arr = np.asarray(inp["data"], dtype=np.float32)
        if arr.size != int(np.prod(dims)) or len(dims) != 4:
            raise BadImage(f"shape {dims} does not hold {arr.size} values as N x C x H x W")
        return from_array(arr.reshape(dims), shape)
    except BadImage as exc:
        raise Refused(422, str(exc)) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise Refused(422, f"expected {{'inputs': [{{'name', 'shape', 'datatype': 'FP32', 'data'}}]}} ({exc})") \
            from None
