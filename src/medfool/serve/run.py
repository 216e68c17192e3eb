"""``medfool range serve``: load the model, the keys and the log, then serve on loopback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from medfool.data.windowing import Window
from medfool.defences.input_transforms import with_transforms
from medfool.defences.stateful import StatefulDetector, build_detector
from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.serve.app import Answer, OnDetect, create_app
from medfool.serve.keys import KeyStore, new_key
from medfool.serve.limits import Limits
from medfool.serve.querylog import QueryLog
from medfool.utils.device import resolve_device
from medfool.vocab import Device

__all__ = ["RangeJob", "add_key", "make_detector", "serve", "served_model"]

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
    detector: str | None = None
    on_detect: OnDetect = "reject"
    encoder: str = "pixels"
    fpr: float = 0.001
    calibrate_on: str | None = None
    window: Window | None = None
    seed: int = 0
    transforms: tuple[dict[str, object], ...] = ()  # input-transform defences put in front of the model


def make_detector(job: RangeJob, model: Classifier) -> StatefulDetector | None:
    """The job's detector; the knn one is calibrated on up to 2,000 training images of the
    model's dataset (or ``calibrate_on``), drawn with the job's seed."""
    if job.detector is None:
        return None
    benign = None
    if job.detector == "knn":
        from medfool.data import load_dataset

        spec = job.calibrate_on or model.meta.dataset
        if not spec:
            raise ConfigError("the model does not name its dataset: give --calibrate-on DATASET for the knn detector")
        train = load_dataset(spec, size=model.meta.input_shape[1]).split("train")
        benign, _ = train.get(train.sample_index(min(2000, len(train)), seed=job.seed))
    return build_detector(job.detector, model, benign, encoder=job.encoder, fpr=job.fpr)


def add_key(path: str | Path, name: str) -> str:
    """A new key named ``name``, appended (hashed) to the key file; the key itself is returned once."""
    key, record = new_key(name)
    KeyStore.append(path, record)
    return key


def served_model(job: RangeJob) -> Classifier:
    """The model as served: the checkpoint behind the job's input-transform defences."""
    model, _ = load_classifier(job.model, device=resolve_device(job.device))
    return with_transforms(model, list(job.transforms)) if job.transforms else model


def serve(job: RangeJob) -> None:
    """Serve until interrupted. The query log is OUT/queries.sqlite."""
    import uvicorn

    if (job.keys is None) == (job.api_key is None):
        raise ConfigError("give exactly one of --keys FILE and --api-key KEY")
    keys = KeyStore.load(job.keys) if job.keys else KeyStore.single(job.api_key or "")
    model = served_model(job)
    job.out.mkdir(parents=True, exist_ok=True)
    detector = make_detector(job, model)
    queries = QueryLog(job.out / "queries.sqlite")
    app = create_app(model, keys, Limits(job.rate, job.burst, job.daily), queries, answer=job.answer,
                     max_bytes=job.max_bytes, detector=detector, on_detect=job.on_detect, window=job.window)
    log.info("serving %s on http://%s:%d (MAX: POST /model/predict; KServe v2: /v2/models/medfool/infer; "
             "schema: /openapi.json); queries logged to %s%s", job.model, job.host, job.port,
             job.out / "queries.sqlite",
             f"; detector {detector.name} ({job.on_detect})" if detector is not None else "")
    try:
        uvicorn.run(app, host=job.host, port=job.port, log_level="warning")
    finally:
        queries.close()
