"""``Classifier``: a network plus everything needed to use it safely from pixel space.

It owns normalisation, so callers (attacks above all) always pass images in [0, 1] and
every epsilon is measured in the same units. It also knows the task (multi-class,
binary with one or two logits, multi-label), the class names and which classes are
clinically critical.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from medfool.errors import ConfigError
from medfool.models.preprocess import AdaptiveLayer, build_preprocess, check_spec
from medfool.vocab import BINARY, MULTI_LABEL, TASKS, Task

__all__ = ["DECISION_MARGIN", "MIN_ROWS", "Classifier", "MetaView", "ModelMeta", "channel_stats", "decide_as",
           "logits_to_labels", "logits_to_probs", "to_network_input"]


@dataclass(frozen=True)
class ModelMeta:
    """Everything about a model that is not a weight; stored as JSON in every checkpoint."""

    task: Task
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_outputs: int
    critical_classes: tuple[int, ...] = ()
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    # input-transform defences applied to [0, 1] pixels before normalisation (models.preprocess)
    preprocess: tuple[dict[str, Any], ...] = ()
    # what the network itself takes (C, H, W), when it differs from input_shape: images are
    # resized (bilinear) and grey ones repeated to three channels inside the model, so the
    # attack space stays the data's own pixels; mean and std are the network's (per its channel)
    network_input: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        for spec in self.preprocess:
            check_spec(spec)
        if self.task not in TASKS:
            raise ConfigError(f"task must be multi-class, binary or multi-label, got {self.task!r}")
        if len(self.input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in self.input_shape) \
                or self.input_shape[0] not in (1, 3):
            raise ConfigError(f"input_shape must be (C, H, W) with C in (1, 3) and positive sizes, "
                              f"got {self.input_shape}")
        if self.network_input is not None:
            nc, nh, nw = (*tuple(self.network_input), 0, 0, 0)[:3]
            if len(self.network_input) != 3 or nc not in (1, 3) or min(nh, nw) < 1:
                raise ConfigError(f"network_input must be (C, H, W) with C in (1, 3), got {self.network_input}")
            if self.input_shape[0] == 3 and nc == 1:
                raise ConfigError("an RGB input cannot feed a one-channel network")
        c = self.channels
        if len(self.mean) != c or len(self.std) != c:
            raise ConfigError(f"mean/std need {c} values (one per channel), got {len(self.mean)}/{len(self.std)}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ConfigError(f"mean and std must be finite, got mean {self.mean}, std {self.std}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std values must be > 0, got {self.std}")
        k = len(self.class_names)
        bad = [i for i in self.critical_classes if not isinstance(i, int) or not 0 <= i < k]
        if bad:
            raise ConfigError(f"critical_classes must be class indices in [0, {k - 1}], "
                              f"got {list(self.critical_classes)}")
        expected = (1, 2) if self.task == BINARY else (len(self.class_names),)
        if self.num_outputs not in expected:
            raise ConfigError(f"a {self.task} model over {len(self.class_names)} classes must have "
                              f"{' or '.join(map(str, expected))} outputs, got {self.num_outputs}")

    @property
    def channels(self) -> int:
        """The network's channel count (what mean and std are per)."""
        return (self.network_input or self.input_shape)[0]

    def to_json(self) -> dict[str, Any]:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}
        if not self.preprocess:  # checkpoints of undefended models read as before
            del out["preprocess"]
        if self.network_input is None:
            del out["network_input"]
        return out

    def for_input(self, shape: tuple[int, int, int]) -> ModelMeta:
        """This model's description for images of ``shape`` (C, H, W): a model that resizes
        inside (``network_input``) takes any size, and grey images when its network is RGB."""
        shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        if shape == tuple(self.input_shape) or self.network_input is None:
            return self
        return replace(self, input_shape=shape)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelMeta:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model metadata keys: {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kw)


class MetaView:
    """Read-only views of a model's metadata, shared by every kind of model (white-box
    :class:`Classifier`, query-only ``PredictModel``)."""

    meta: ModelMeta

    @property
    def task(self) -> Task:
        return self.meta.task

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.class_names

    @property
    def num_classes(self) -> int:
        return len(self.meta.class_names)


# the batch size the network sees inside Classifier.padded (see there)
MIN_ROWS = 8
MAX_EOT = 1024  # EOT draws per forward pass at most (draw keys number calls in steps of it)


class Classifier(MetaView, nn.Module):
    """Wraps ``network`` (which expects normalised input) so that ``forward`` takes [0, 1] pixels.

    Shape: x (N, C, H, W) float in [0, 1] -> logits (N, num_outputs).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, network: nn.Module, meta: ModelMeta) -> None:
        super().__init__()
        self.network = network
        self.meta = meta
        c = meta.channels
        self.register_buffer("mean", torch.tensor(meta.mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(meta.std, dtype=torch.float32).view(1, c, 1, 1))
        # channels_last runs convolutions about 20-25 % faster on CPUs (oneDNN); only for our own
        # registry networks, whose layers we know accept it.
        self._min_rows = 0  # see padded()
        self._eot = 1       # see adaptive()
        self._judge = False  # see adaptive(): decisions from the deployed forward
        self._calls = 0     # see _surrogate_forward(): numbers the EOT calls since adaptive()
        self.preprocess = build_preprocess(meta.preprocess)
        self.channels_last = meta.arch is not None
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @property
    def device(self) -> torch.device:
        return self.mean.device

    # -- computation ------------------------------------------------------------------------
    @contextlib.contextmanager
    def padded(self, rows: int = MIN_ROWS) -> Iterator[None]:
        """Within this block the network sees batches of exactly ``rows`` images: a batch is cut
        into chunks of ``rows`` and the last chunk is padded with zero images (their outputs
        dropped). CPU kernels (MKL's GEMM, oneDNN's convolutions) choose their algorithm, and so
        the last bits of every image's logits and gradient, by the batch size: one image alone and
        the same image among 63 others differ. With one fixed shape every image goes through the
        same kernels wherever it sits, so an attack's result never depends on how many images
        share its batch. The price is a fixed overhead per call, which matters for small networks:
        about a fifth of a forward+backward on the small CNN at 28 px (benchmarks/whitebox.py).
        On a GPU the batch is only padded up to ``rows``; chunking would waste the device."""
        old = self._min_rows
        self._min_rows = rows
        try:
            yield
        finally:
            self._min_rows = old

    @property
    def defence_layers(self) -> list[AdaptiveLayer]:
        """The input-transform defences inside the model (what an adaptive attacker adapts to)."""
        return [m for m in self.modules() if isinstance(m, AdaptiveLayer)]

    @property
    def adapts(self) -> bool:
        """Whether the adaptive view differs from the deployed model at all: a BPDA layer, a
        random layer or a vote. A mean ensemble of plain models or a Gaussian blur is attacked
        exactly as deployed, so an adaptive run on it would repeat the naive one."""
        return any(m.adapts for m in self.defence_layers)

    @property
    def randomised(self) -> bool:
        """Whether an answer draws random numbers (a random input transform, anywhere inside)."""
        return any(m.random for m in self.defence_layers)

    @contextlib.contextmanager
    def adaptive(self, eot: int = 1, *, judged_as_deployed: bool = True) -> Iterator[Classifier]:
        """The model as an attacker who knows its defences sees it (Athalye et al., ICML 2018):
        within this block every defence layer keeps its forward pass and differentiates as the
        identity (BPDA), a vote ensemble scores with the mean of its members' log-probabilities,
        and, where the model is random, each forward pass averages the logits of ``eot`` fresh
        random draws (expectation over transformation).

        The scores are the surrogate's, but every decision read from them is the deployed
        model's (:func:`decide_as`): an attack stops on an image only when the model as deployed
        (its own draw, its vote) is fooled, never when only the EOT mean or the smooth surrogate
        is. Success is judged as deployed inside every attack, not only afterwards.
        ``judged_as_deployed=False`` decides by the EOT mean instead: only to measure what that
        error costs (benchmarks/random_defence.py)."""
        layers = self.defence_layers
        old = [(m.bpda, m.fresh) for m in layers]
        old_eot, old_judge, old_calls = self._eot, self._judge, self._calls
        if not 1 <= eot <= MAX_EOT:
            raise ConfigError(f"eot must be between 1 and {MAX_EOT}, got {eot}")
        for m in layers:
            m.bpda, m.fresh = True, m.random
        self._eot = eot if self.randomised else 1
        self._judge = self.randomised and judged_as_deployed
        self._calls = 0
        try:
            yield self
        finally:
            for m, (bpda, fresh) in zip(layers, old, strict=True):
                m.bpda, m.fresh = bpda, fresh
            self._eot, self._judge, self._calls = old_eot, old_judge, old_calls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._judge:
            return self._surrogate_forward(x)
        scores = self._surrogate_forward(x)
        with torch.no_grad():
            deployed = self._deployed_forward(x)
        return decide_as(scores, deployed, self.meta.task)

    def _surrogate_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``eot`` fresh draws. Draw ``e`` of call ``c`` is keyed by (c, e) and each
        image's own pixels, never by the global RNG or the image's place in the batch, so an
        image's scores are the same alone or among others."""
        fresh = [m for m in self.defence_layers if m.random and m.fresh]
        if not fresh:
            return self._padded_forward(x)
        self._calls += 1
        total = None
        for e in range(self._eot):
            for m in fresh:
                m.draw = self._calls * MAX_EOT + e
            out = self._padded_forward(x)
            total = out if total is None else total + out
        assert total is not None
        return total / self._eot

    def _deployed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deployed answer inside the adaptive view: random layers draw from the image's own
        pixels, as they do deployed (their gradient flag does not change a forward value)."""
        random_layers = [m for m in self.defence_layers if m.random]
        old = [m.fresh for m in random_layers]
        for m in random_layers:
            m.fresh = False
        try:
            return self._padded_forward(x)
        finally:
            for m, fresh in zip(random_layers, old, strict=True):
                m.fresh = fresh

    def _padded_forward(self, x: torch.Tensor) -> torch.Tensor:
        n, rows = x.shape[0], self._min_rows
        if not rows or n == 0 or n == rows or (n > rows and x.device.type != "cpu"):
            return self._forward(x)
        padded = torch.cat([x, x.new_zeros((-n % rows, *x.shape[1:]))])
        return torch.cat([self._forward(chunk) for chunk in padded.split(rows)])[:n]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.preprocess):
            x = self.preprocess(x)
        if self.meta.network_input is not None:
            x = to_network_input(x, self.meta.network_input)
        z = (x - self.mean) / self.std
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.network(z)  # type: ignore[no-any-return]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) class probabilities (independent per label for multi-label)."""
        return logits_to_probs(self(x), self.meta.task)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) class indices, or (N, L) 0/1 for multi-label."""
        return logits_to_labels(self(x), self.meta.task)


def to_network_input(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resize (bilinear; antialiased when shrinking, so a 512 px DICOM does not alias into the
    network) and repeat grey to RGB: differentiable, so attacks see through it."""
    c, h, w = shape
    if tuple(x.shape[-2:]) != (h, w):
        shrink = x.shape[-2] > h or x.shape[-1] > w
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    if x.shape[1] != c:
        x = x.expand(-1, c, -1, -1)
    return x


# how far past the deployed decision's boundary decide_as puts a score it moves
DECISION_MARGIN = 1e-3


def decide_as(scores: torch.Tensor, deployed: torch.Tensor, task: Task) -> torch.Tensor:
    """``scores`` (an attacker's surrogate: an EOT mean, a vote's smooth version) moved, where
    their decision differs from the ``deployed`` logits', just past the deployed decision's
    boundary by a constant (no gradient). The gradient stays the surrogate's, loss values move
    only where the two disagree, and every label read from the result is the deployed one.

    Shape: scores, deployed (N, K) -> (N, K)."""
    want = logits_to_labels(deployed.detach(), task)
    have = logits_to_labels(scores.detach(), task)
    if task == MULTI_LABEL or scores.shape[1] == 1:
        # one sign per output: where it differs, the score moves to +-DECISION_MARGIN
        if task != MULTI_LABEL:
            want, have = want[:, None], have[:, None]
        goal = torch.where(want.bool(), DECISION_MARGIN, -DECISION_MARGIN).to(scores.dtype)
        shift = torch.where(want != have, goal - scores.detach(), torch.zeros_like(scores))
        return scores + shift
    # one class per row: the deployed class's score rises just above the row's maximum
    top = scores.detach().max(dim=1).values
    lift = (top - scores.detach().gather(1, want[:, None])[:, 0] + DECISION_MARGIN) * (want != have)
    return scores + torch.zeros_like(scores).scatter(1, want[:, None], lift[:, None])


def logits_to_probs(logits: torch.Tensor, task: Task) -> torch.Tensor:
    if task == MULTI_LABEL:
        return torch.sigmoid(logits)
    if logits.shape[1] == 1:  # binary with one logit: p(positive) = sigmoid(z)
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


def logits_to_labels(logits: torch.Tensor, task: Task) -> torch.Tensor:
    if task == MULTI_LABEL:
        return (logits > 0).long()
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def channel_stats(x: torch.Tensor) -> tuple[Sequence[float], Sequence[float]]:
    """Per-channel mean and std of a (N, C, H, W) batch, for the normalisation a model owns."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()
