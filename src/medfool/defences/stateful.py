"""Stateful detectors: a served model watches the stream of queries, not one image.

Query-based black-box attacks send hundreds of near-copies of one image; a hospital's traffic
does not. Both detectors here keep state across queries and give a verdict per query:

* :class:`Blacklight` (Li et al., USENIX Security 2022): pixels quantised to ``quant`` levels
  of 8 bits, every window of ``window`` consecutive values (the image flattened H x W x C)
  hashed with SHA-256, the ``top`` largest hashes kept as the query's fingerprint. One table
  across all accounts: a query that shares at least ``hits`` of its hashes with any single
  earlier query is flagged. Defaults are those of the OARS reimplementation (Feng et al., CCS
  2023): window 20, top 50, quantisation 50, a hit at 25 of 50.
* :class:`KnnDetector` (Chen, Carlini & Wagner, "Stateful detection of black-box adversarial
  attacks", 2019): per account, the mean distance of a query to its ``k`` = 50 nearest earlier
  queries in an encoder's space; below a threshold set on benign images for a stated
  false-positive rate, the query is flagged. No verdict is possible before an account's
  ``k + 1``-th query.

An exact repeat of an earlier query from the same account (same bytes) that was let through is
let through again by default (``repeats="pass"``): it tells the sender nothing new, and a
hospital re-sends the same study; a refused query sent again is judged again.
``repeats="check"`` keeps the published behaviour. State is bounded: Blacklight keeps the last
1,000 queries per hash, the k-NN detector the last 2,000 queries per account (the number its
threshold is set on: a longer history brings nearer neighbours and more false positives).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from medfool.errors import ConfigError
from medfool.models.classifier import Classifier
from medfool.models.features import FeatureTap
from medfool.models.predict import PredictModel, from_classifier

__all__ = ["DETECTOR_NAMES", "Blacklight", "KnnDetector", "StatefulDetector", "blacklight_fingerprint",
           "build_detector", "feature_encoder", "guarded", "knn_threshold", "pixel_encoder"]

Repeats = Literal["pass", "check"]
DETECTOR_NAMES = ("blacklight", "knn")


class StatefulDetector(Protocol):
    """``observe`` gives one verdict per image (True: flagged as part of an attack), in order:
    image i of a batch is judged against everything before it, images 0..i-1 of the batch
    included, then remembered."""

    name: str
    seconds: float
    observed: int

    def observe(self, x: torch.Tensor, account: str) -> list[bool]: ...


def blacklight_fingerprint(img: np.ndarray, *, window: int, top: int, quant: int) -> frozenset[bytes]:
    """The ``top`` largest SHA-256 digests over all windows of the quantised, flattened image.

    Shape: img (C, H, W) float in [0, 1]. Identical windows hash alike, so only distinct
    windows are hashed (a uniform background costs one hash)."""
    q = np.floor(np.clip(img, 0.0, 1.0) * 255.0 / quant).astype(np.uint8)
    flat = np.ascontiguousarray(q.transpose(1, 2, 0)).reshape(-1)  # H x W x C order, as the paper's arrays
    # (L - window + 1, window): every window of consecutive values
    windows = flat[None] if flat.size < window else np.lib.stride_tricks.sliding_window_view(flat, window)
    rows = np.unique(np.ascontiguousarray(windows).view(np.dtype((np.void, windows.shape[1]))).reshape(-1))
    digests = sorted((hashlib.sha256(r.tobytes()).digest() for r in rows), reverse=True)
    return frozenset(digests[:top])


@dataclass
class Blacklight:
    """One hash table across accounts; see the module docstring."""

    window: int = 20
    top: int = 50
    quant: int = 50
    hits: int = 25
    repeats: Repeats = "pass"
    per_hash: int = 1000       # earlier queries kept per hash (the most recent)
    remember: int = 1_000_000  # exact repeats remembered (the oldest forgotten first)
    name: str = "blacklight"
    seconds: float = 0.0
    observed: int = 0
    _table: dict[bytes, list[int]] = field(default_factory=lambda: defaultdict(list))
    _seen: dict[tuple[str, bytes], int] = field(default_factory=dict)
    _n: int = 0

    def observe(self, x: torch.Tensor, account: str) -> list[bool]:
        start = time.perf_counter()
        out = []
        for img in x.detach().cpu().numpy():
            digest = hashlib.sha256(img.tobytes()).digest()
            if self.repeats == "pass" and (account, digest) in self._seen:
                out.append(False)
                continue
            fp = blacklight_fingerprint(img, window=self.window, top=self.top, quant=self.quant)
            shared: Tally[int] = Tally()
            for h in fp:
                shared.update(self._table.get(h, ()))
            flagged = bool(shared) and max(shared.values()) >= self.hits
            out.append(flagged)
            for h in fp:
                ids = self._table[h]
                ids.append(self._n)
                if len(ids) > self.per_hash:  # a hash every image shares (a flat background) stays cheap
                    del ids[: len(ids) - self.per_hash]
            if not flagged:  # a refused query sent again is judged again
                self._seen[(account, digest)] = self._n
                if len(self._seen) > self.remember:
                    del self._seen[next(iter(self._seen))]
            self._n += 1
        self.seconds += time.perf_counter() - start
        self.observed += len(out)
        return out


Encoder = Callable[[torch.Tensor], torch.Tensor]


def knn_threshold(features: torch.Tensor, k: int, fpr: float) -> float:
    """The distance below which a benign query is flagged at rate ``fpr``: the ``fpr`` quantile
    of each benign image's mean distance to its ``k`` nearest other benign images (Chen et al.'s
    calibration). Shape: features (N, D), N > k."""
    if features.shape[0] <= k:
        raise ConfigError(f"the knn detector's calibration needs more than k = {k} benign images, got "
                          f"{features.shape[0]}")
    if not 0.0 <= fpr <= 1.0:
        raise ConfigError(f"a false-positive rate is in [0, 1], got {fpr:g}")
    d = torch.cdist(features, features)
    d.fill_diagonal_(float("inf"))
    mean_k = d.topk(k, dim=1, largest=False).values.mean(1)
    return float(torch.quantile(mean_k, fpr))


@dataclass
class KnnDetector:
    """Per-account history in an encoder's space; see the module docstring."""

    encoder: Encoder
    threshold: float
    k: int = 50
    history: int = 2_000  # per account, the most recent (as many as the threshold was set on)
    repeats: Repeats = "pass"
    name: str = "knn"
    seconds: float = 0.0
    observed: int = 0
    _buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    _seen: dict[str, set[bytes]] = field(default_factory=lambda: defaultdict(set))

    def observe(self, x: torch.Tensor, account: str) -> list[bool]:
        start = time.perf_counter()
        with torch.no_grad():
            feats = self.encoder(x).detach().float().cpu().flatten(1)
        buf = self._buffers.get(account, feats.new_zeros(0, feats.shape[1]))
        seen = self._seen[account]
        out = []
        for img, f in zip(x.detach().cpu().numpy(), feats, strict=True):
            digest = hashlib.sha256(img.tobytes()).digest()
            if self.repeats == "pass" and digest in seen:
                out.append(False)
                continue
            flagged = False
            if buf.shape[0] >= self.k:
                nearest = torch.cdist(f[None], buf)[0].topk(self.k, largest=False).values
                flagged = float(nearest.mean()) < self.threshold
            out.append(flagged)
            buf = torch.cat([buf[-(self.history - 1):], f[None]])
            if not flagged:  # a refused query sent again is judged again
                seen.add(digest)
        self._buffers[account] = buf
        self.seconds += time.perf_counter() - start
        self.observed += len(out)
        return out


def pixel_encoder(x: torch.Tensor) -> torch.Tensor:
    """Pixels as they are (flattened): the encoder-free baseline of Chen et al."""
    return x.flatten(1)


def feature_encoder(model: Classifier) -> Encoder:
    """The served model's own deep features (the last linear layer's input)."""
    tap = FeatureTap(model)

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return tap.deep(x).cpu()

    return encode


def build_detector(name: str, model: Classifier, benign: torch.Tensor | None = None, *, encoder: str = "pixels",
                   fpr: float = 0.001, k: int = 50) -> StatefulDetector:
    """A detector by name. ``knn`` is calibrated on ``benign`` images (the model's training
    split: never the images it will be judged on) for false-positive rate ``fpr``."""
    if name == "blacklight":
        return Blacklight()
    if name == "knn":
        if benign is None:
            raise ConfigError("the knn detector needs benign images to set its threshold")
        enc = pixel_encoder if encoder == "pixels" else feature_encoder(model)
        feats = torch.cat([enc(benign[s:s + 256]) for s in range(0, benign.shape[0], 256)]).float()
        return KnnDetector(enc, knn_threshold(feats, k, fpr), k=k)
    raise ConfigError(f"unknown detector {name!r}; choose from {', '.join(DETECTOR_NAMES)}")


def guarded(model: Classifier, detector: StatefulDetector, *, output: str = "probs", account: str = "attacker",
            reject: bool = True, keys: int = 1) -> PredictModel:
    """``model`` as the range serves it behind ``detector``, in process: every query is judged
    first; a flagged one is refused (a NaN row, as the HTTP client returns it) unless
    ``reject`` is False (flagged silently). The same semantics as ``medfool range serve``,
    without the network, for measurements that run many attacks. ``keys`` > 1: a Sybil
    attacker, each query sent from the next of that many accounts in turn."""
    plain = from_classifier(model, "labels" if output == "labels" else "probs")
    turn = [0]

    def judge(x: torch.Tensor) -> list[bool]:
        if keys == 1:
            return detector.observe(x, account)
        flagged: list[bool] = []
        for row in x:
            flagged += detector.observe(row[None], f"{account}-{turn[0] % keys}")
            turn[0] += 1
        return flagged

    def predict(x: torch.Tensor) -> torch.Tensor:
        flagged = torch.tensor(judge(x), dtype=torch.bool)
        out = plain.predict(x).float()
        if reject and bool(flagged.any()):
            out = out.clone()
            out[flagged.to(out.device)] = float("nan")
        return out

    return PredictModel(predict, model.meta, plain.output, model.device, may_refuse=reject)
