"""One-call jobs on a single model: ``medfool evaluate``, ``medfool info`` and ``medfool export``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfool.errors import ConfigError
from medfool.models import load_classifier, read_header
from medfool.models.classifier import ModelMeta
from medfool.models.metrics import evaluate
from medfool.models.predict import export_onnx
from medfool.runs.common import DataSource, check_writable, match_model_to_data
from medfool.utils.device import resolve_device
from medfool.vocab import Device, SplitName

__all__ = ["ModelInfo", "evaluate_model", "export_model", "model_info"]


def evaluate_model(model: str, data: DataSource, split: SplitName, device: Device = "auto"
                   ) -> tuple[str, dict[str, Any]]:
    """The model's metrics on one split of the data (the dataset's name and the metrics)."""
    clf, _ = load_classifier(model, device=resolve_device(device))
    dataset = data.load()
    match_model_to_data(clf, dataset, model)
    return dataset.info.name, evaluate(clf, dataset.split(split))


@dataclass(frozen=True)
class ModelInfo:
    """What ``medfool info`` prints: the description, the training record and the size."""

    meta: ModelMeta
    record: dict[str, Any]
    parameters: int


def model_info(model: str) -> ModelInfo:
    clf, record = load_classifier(model)
    header = read_header(model) if model.endswith(".safetensors") else {}
    return ModelInfo(clf.meta, header.get("record", record), sum(p.numel() for p in clf.parameters()))


def export_model(model: str, out: Path) -> Path:
    """The model as ONNX (normalisation inside) with its JSON description beside it."""
    check_writable(out.parent if str(out.parent) else Path("."))
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: the export file must end in .onnx")
    clf, _ = load_classifier(model)
    try:
        export_onnx(clf, out)
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs the onnx package: pip install 'medfool[onnx]' ({exc})") from None
    return out
