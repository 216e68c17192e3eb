"""A served model as the attacker sees it: a URL, one or more API keys, answers over HTTP.

:func:`connect` returns a :class:`medfool.models.predict.PredictModel`, so every query-only
attack takes a URL as the model. The :class:`RangeClient` behind it

* reads the model's classes, task and input shape from ``GET /v2/models/{name}``;
* sends batches through KServe v2 (``POST /v2/models/{name}/infer``, up to ``batch`` images a
  request), or one image a request in the MAX dialect (a URL ending in ``/model/predict``);
* counts every image answered, refused or spent (``stats``);
* on 429 waits what ``Retry-After`` says (at most ``max_wait`` seconds at a time) when the rate
  is exceeded; when the key's daily budget is spent (``X-RateLimit-Scope: daily``), the next key
  takes over, and when none is left :class:`KeysSpent` ends the run with one line;
* retries a failed connection or request (a server restarting) for up to ``retry_for`` seconds;
* spreads requests over its keys in turn (a Sybil attacker) when given several;
* marks a query the server's detector refused as a NaN row (``may_refuse``), which the
  attacks read as "no progress".
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch

from medfool.errors import ConfigError, MedfoolError
from medfool.models.classifier import ModelMeta
from medfool.models.predict import PredictModel
from medfool.vocab import BINARY, TASKS, Output, Task

__all__ = ["ClientStats", "KeysSpent", "RangeClient", "connect", "is_url"]


class KeysSpent(MedfoolError):
    """Every key the attacker holds is over its daily budget."""


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


@dataclass
class ClientStats:
    """What the attack cost: images answered and refused, requests, waits, keys spent."""

    answered: int = 0
    refused: int = 0
    requests: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    reconnects: int = 0
    spent_keys: list[int] = field(default_factory=list)
    per_key: dict[int, int] = field(default_factory=dict)

    @property
    def queries(self) -> int:
        """Every image the server took from us (answered or refused)."""
        return self.answered + self.refused


class RangeClient:
    def __init__(self, url: str, keys: list[str], *, run: str = "", batch: int = 64, max_wait: float = 30.0,
                 retry_for: float = 120.0, timeout: float = 60.0) -> None:
        import httpx

        # httpx logs every request at INFO: thousands of lines for one attack
        logging.getLogger("httpx").setLevel(logging.WARNING)
        if not keys:
            raise ConfigError(f"{url}: an API key is needed (--api-key KEY; several for a Sybil attacker)")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{url}: not an http(s) URL")
        if parts.username or parts.password:
            raise ConfigError("put no credentials in the URL: give the key with --api-key (it is never recorded)")
        self.base = f"{parts.scheme}://{parts.netloc}"
        path = parts.path.rstrip("/")
        self.dialect = "max" if path.endswith("/model/predict") else "v2"
        segs = path.split("/")
        self.name = segs[3] if len(segs) > 3 and segs[1:3] == ["v2", "models"] else "medfool"
        self.keys, self.run, self.batch = list(keys), run, batch if self.dialect == "v2" else 1
        self.max_wait, self.retry_for = max_wait, retry_for
        self.stats = ClientStats()
        self.classes: tuple[str, ...] = ()
        self._next = 0
        self._http = httpx.Client(timeout=timeout)

    # -- plumbing --------------------------------------------------------------------------
    def _live_keys(self) -> list[int]:
        return [i for i in range(len(self.keys)) if i not in self.stats.spent_keys]

    def _send(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:  # JSON bodies
        """One request with the next live key: retries connections and short 429 waits."""
        import httpx

        down_since: float | None = None
        while True:
            live = self._live_keys()
            if not live:
                raise KeysSpent(f"{self.base}: every API key is over its daily budget "
                                f"({self.stats.queries:,} queries made); start the run again when the budget renews")
            key = live[self._next % len(live)]
            headers = {"X-API-Key": self.keys[key]}
            if self.run:
                headers["X-Run-Id"] = self.run
            try:
                resp = self._http.request(method, self.base + path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > self.retry_for:
                    raise ConfigError(f"{self.base}: unreachable for {self.retry_for:g} s ({exc})") from None
                self.stats.reconnects += 1
                time.sleep(0.5)
                continue
            down_since = None
            self.stats.requests += 1
            if resp.status_code == 429:
                self.stats.rate_limited += 1
                wait = float(resp.headers.get("retry-after", "1") or 1)
                scope = resp.headers.get("x-ratelimit-scope") or ("daily" if wait > 3600 else "rate")
                if scope == "daily":
                    self.stats.spent_keys.append(key)
                    continue
                wait = min(wait, self.max_wait)
                self.stats.waited_s += wait
                time.sleep(wait)
                continue
            try:
                body = resp.json()
            except ValueError:
                body = {}
            if resp.status_code != 200:
                detail = body.get("error") or body.get("detail") or resp.text[:200]
                raise ConfigError(f"{self.base}{path}: HTTP {resp.status_code}: {detail}")
            self._next += 1
            return key, body

    # -- the model -------------------------------------------------------------------------
    def metadata(self) -> ModelMeta:
        _, body = self._send("GET", f"/v2/models/{self.name}")
        try:
            (inp,) = body["inputs"]
            shape = tuple(int(d) for d in inp["shape"][1:])
            params = body.get("parameters", {})
            classes = tuple(str(c) for c in params["classes"])
            task: Task = params.get("task", "multi-class")
            self.batch = max(1, min(self.batch, int(params.get("max_batch", self.batch))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.base}: the model's metadata is not what medfool serves ({exc})") from None
        if len(shape) != 3 or task not in TASKS:
            raise ConfigError(f"{self.base}: input shape {list(shape)} / task {task!r} not understood")
        c = shape[0]
        self.classes = classes
        return ModelMeta(task=task, class_names=classes, input_shape=shape,
                         mean=(0.0,) * c, std=(1.0,) * c, num_outputs=2 if task == BINARY else len(classes))

    def predict(self, x: torch.Tensor, output: Output) -> torch.Tensor:
        """Probabilities (N, K) or labels (N,) for ``x``; NaN rows where the server refused."""
        x = x.detach().float().cpu().clamp(0, 1)
        parts = [self._predict(x[s:s + self.batch], output) for s in range(0, x.shape[0], self.batch)]
        return torch.cat(parts) if parts else torch.zeros(0)

    def _predict(self, x: torch.Tensor, output: Output) -> torch.Tensor:
        try:
            return self._answer(x, output)
        except MedfoolError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"{self.base}: an answer medfool cannot read ({type(exc).__name__}: {exc})") from None

    def _answer(self, x: torch.Tensor, output: Output) -> torch.Tensor:
        n = x.shape[0]
        if self.dialect == "max":
            buf = io.BytesIO()
            np.save(buf, x[0].numpy(), allow_pickle=False)
            key, body = self._send("POST", "/model/predict", files={"image": ("x.npy", buf.getvalue())})
            refused = [body.get("status") == "rejected"]
            preds: list[dict[str, Any]] = body.get("predictions", [])
            k = len(self.classes)
            if refused[0]:
                out = torch.full((1, k) if output == "probs" else (1,), float("nan"))
            elif preds and "probability" in preds[0]:
                rows = torch.tensor([[float(p["probability"]) for p in preds]])
                out = rows.argmax(1).float() if output == "labels" else rows
            else:
                if output == "probs":
                    raise ConfigError(f"{self.base}: the model answers with labels only; use a decision-based "
                                      "attack (hsj, boundary)")
                out = torch.tensor([float(self.classes.index(str(preds[0]["label"])))])
        else:
            payload = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.flatten().tolist()}]}
            key, body = self._send("POST", f"/v2/models/{self.name}/infer", content=json.dumps(payload))
            outputs = {o["name"]: o for o in body["outputs"]}
            refused = [bool(r) for r in outputs.get("rejected", {"data": [False] * n})["data"]]
            if "probabilities" in outputs:
                o = outputs["probabilities"]
                rows = torch.tensor(o["data"], dtype=torch.float32).reshape(o["shape"])
                out = rows.argmax(1).float() if output == "labels" else rows
            else:
                if output == "probs":
                    raise ConfigError(f"{self.base}: the model answers with labels only; use a decision-based "
                                      "attack (hsj, boundary)")
                o = outputs["label"]
                out = torch.tensor(o["data"], dtype=torch.float32).reshape(o["shape"])
        mask = torch.tensor(refused, dtype=torch.bool)
        if bool(mask.any()):
            out = out.clone()
            out[mask] = float("nan")
        self.stats.refused += int(mask.sum())
        self.stats.answered += n - int(mask.sum())
        self.stats.per_key[key] = self.stats.per_key.get(key, 0) + n
        return out

    def close(self) -> None:
        self._http.close()


def connect(url: str, keys: list[str], *, output: Output = "probs", run: str = "", batch: int = 64,
            max_wait: float = 30.0, retry_for: float = 120.0) -> tuple[PredictModel, RangeClient]:
    """The served model at ``url`` as a predict-only model, and the client that counts for it."""
    client = RangeClient(url, keys, run=run, batch=batch, max_wait=max_wait, retry_for=retry_for)
    meta = client.metadata()

    def predict(x: torch.Tensor) -> torch.Tensor:
        return client.predict(x, output)

    return PredictModel(predict, meta, output, may_refuse=True), client
