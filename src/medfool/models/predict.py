"""Predict-only models: what a black-box attacker can query, and nothing more.

A :class:`PredictModel` maps a batch in [0, 1] to class probabilities (``output="probs"``) or
to labels only (``output="labels"``), with the class names, task and input shape needed to
use it. Adapters: :func:`from_classifier` (our model with its gradients hidden),
:class:`OnnxModel` (an exported model run by onnxruntime) and :func:`from_callable` (any
Python function). Attacks query them through
:class:`medfool.attacks.blackbox.oracle.QueryCounter`, which counts and budgets every query.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.errors import CheckpointError, ConfigError
from medfool.models.classifier import Classifier, MetaView, ModelMeta, logits_to_labels, logits_to_probs
from medfool.utils.io import atomic_write_bytes, atomic_write_json
from medfool.vocab import BINARY, MULTI_CLASS, MULTI_LABEL, OUTPUTS, Output, Task

__all__ = ["OUTPUTS", "OnnxModel", "PredictModel", "export_onnx", "from_callable", "from_classifier"]


@dataclass
class PredictModel(MetaView):
    """A model seen from outside: ``predict(x)`` -> (N, K) probabilities, or (N,) labels
    ((N, L) 0/1 for multi-label) when ``output == "labels"``."""

    predict_fn: Callable[[torch.Tensor], torch.Tensor]
    meta: ModelMeta
    output: Output = "probs"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    may_refuse: bool = False
    """A served model behind a detector may refuse a query: its row of ``predict`` is NaN, and so
    is its row of ``probabilities`` and ``scores``."""

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) probabilities, or the one-hot (0/1 for multi-label) answer of a label-only model."""
        out = self.predict(x).float()
        if self.output == "probs" or self.task == MULTI_LABEL:
            return out
        return _refused_rows(out, lambda o: torch.nn.functional.one_hot(o.long().flatten(),
                                                                        max(2, self.num_classes)).float())

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.predict_fn(x.detach())
        return out.detach()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Pseudo-logits an attack can rank with: log-probabilities (logit of each label's
        probability for multi-label), or a +-1 code of the labels for a label-only model. Their
        argmax (sign for multi-label) is the model's decision, so success checks stay exact."""
        out = self.predict(x).float()
        if self.output == "labels":
            if self.task == MULTI_LABEL:
                return out * 2 - 1
            return _refused_rows(out, lambda o: torch.nn.functional.one_hot(o.long().flatten(),
                                                                            max(2, self.num_classes)).float())
        if self.task == MULTI_LABEL:
            return torch.logit(out.clamp(1e-7, 1 - 1e-7))
        return out.clamp_min(1e-30).log()


def _refused_rows(labels: torch.Tensor, convert: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``convert`` the labels of the answered queries; refused ones (NaN) stay NaN rows."""
    refused = torch.isnan(labels.reshape(labels.shape[0], -1)).any(1)
    if not bool(refused.any()):
        return convert(labels)
    out = convert(torch.where(torch.isnan(labels), torch.zeros_like(labels), labels))
    out[refused] = float("nan")
    return out


def from_classifier(model: Classifier, output: Output = "probs") -> PredictModel:
    """Our model behind a query-only interface: no gradients, probabilities or labels only."""
    model.eval()

    def predict(x: torch.Tensor) -> torch.Tensor:
        logits = model(x.detach())
        return logits_to_labels(logits, model.task) if output == "labels" else logits_to_probs(logits, model.task)

    meta = model.meta
    return PredictModel(predict, meta, output, model.device)


def from_callable(fn: Callable[[torch.Tensor], Any], *, class_names: tuple[str, ...], input_shape: tuple[int, int, int],
                  task: Task = MULTI_CLASS, output: Output = "probs") -> PredictModel:
    """Any Python function from a (N, C, H, W) batch in [0, 1] to probabilities or labels
    (torch tensors or NumPy arrays)."""
    c = input_shape[0]
    meta = ModelMeta(task=task, class_names=tuple(class_names), input_shape=tuple(input_shape),  # type: ignore[arg-type]
                     mean=(0.0,) * c, std=(1.0,) * c,
                     num_outputs=2 if task == BINARY else len(class_names))

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(fn(x)))

    return PredictModel(predict, meta, output)


class OnnxModel:
    """Load an ONNX model exported by ``medfool export`` (its JSON sidecar holds the metadata).

    The graph takes pixels in [0, 1] (normalisation is inside it) and returns logits; this
    turns them into probabilities or labels. onnxruntime is an optional dependency.
    """

    @staticmethod
    def load(path: str | Path, output: Output = "probs") -> PredictModel:
        p = Path(path)
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigError("ONNX models need onnxruntime: pip install 'medfool[onnx]'") from None
        sidecar = p.with_suffix(".json")
        if not sidecar.is_file():
            raise CheckpointError(f"{p}: no metadata file {sidecar.name} beside it (classes, task, input shape)")
        try:
            meta = ModelMeta.from_json(json.loads(sidecar.read_text()))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{sidecar}: not valid model metadata ({exc})") from None
        try:
            session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own untyped errors for bad files)
            raise CheckpointError(f"{p}: not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from None
        name = session.get_inputs()[0].name

        def predict(x: torch.Tensor) -> torch.Tensor:
            (logits,) = session.run(None, {name: x.detach().cpu().numpy().astype(np.float32)})
            z = torch.from_numpy(logits)
            return logits_to_labels(z, meta.task) if output == "labels" else logits_to_probs(z, meta.task)

        return PredictModel(predict, meta, output)


def export_onnx(model: Classifier, path: str | Path) -> Path:
    """Write ``model`` (normalisation included, pixels in [0, 1] in, logits out) as ONNX, with
    its metadata in a JSON file of the same stem."""
    p = Path(path)
    c, h, w = model.meta.input_shape
    was_cl = model.channels_last
    model.channels_last = False  # plain NCHW graph
    model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # the TorchScript-based exporter on purpose: the newer one needs onnxscript as well
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (torch.rand(1, c, h, w, device=model.device),), buf,  # type: ignore[arg-type]
                              input_names=["pixels"], output_names=["logits"],
                              dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    finally:
        model.channels_last = was_cl
    atomic_write_bytes(p, buf.getvalue())
    atomic_write_json(p.with_suffix(".json"), model.meta.to_json())
    return p
