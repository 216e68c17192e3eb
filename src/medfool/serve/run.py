"""``medfool range serve``: load the model, the keys and the log, then serve on loopback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.serve.app import Answer, create_app
from medfool.serve.keys import KeyStore, new_key
from medfool.serve.limits import Limits
from medfool.serve.querylog import QueryLog
from medfool.utils.device import resolve_device
from medfool.vocab import Device

__all__ = ["RangeJob", "add_key", "serve"]

log = logging.getLogger("medfool")


@dataclass(frozen=True)
class RangeJob:
    model: str
    keys: str | None = None
    api_key: str | None = None
    out: Path = Path("range")
    host: str = "127.0.0.1"
    port: int = 8000
    answer: Answer = "probs"
    rate: float = 20.0
    burst: int = 40
    daily: int = 100_000
    max_bytes: int = 4 << 20
    device: Device = "auto"


def add_key(path: str | Path, name: str) -> str:
    """A new key named ``name``, appended (hashed) to the key file; the key itself is returned once."""
    key, record = new_key(name)
    KeyStore.append(path, record)
    return key


def serve(job: RangeJob) -> None:
    """Serve until interrupted. The query log is OUT/queries.sqlite."""
    import uvicorn

    if (job.keys is None) == (job.api_key is None):
        raise ConfigError("give exactly one of --keys FILE and --api-key KEY")
    keys = KeyStore.load(job.keys) if job.keys else KeyStore.single(job.api_key or "")
    model, _ = load_classifier(job.model, device=resolve_device(job.device))
    job.out.mkdir(parents=True, exist_ok=True)
    queries = QueryLog(job.out / "queries.sqlite")
    app = create_app(model, keys, Limits(job.rate, job.burst, job.daily), queries, answer=job.answer,
                     max_bytes=job.max_bytes)
    log.info("serving %s on http://%s:%d (MAX: POST /model/predict; KServe v2: /v2/models/medfool/infer; "
             "schema: /openapi.json); queries logged to %s", job.model, job.host, job.port, job.out / "queries.sqlite")
    try:
        uvicorn.run(app, host=job.host, port=job.port, log_level="warning")
    finally:
        queries.close()
