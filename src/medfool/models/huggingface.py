"""HuggingFace ``transformers`` image classifiers from a local folder (an optional extra:
``pip install 'medfool[hf]'``).

A folder as ``save_pretrained`` writes it: ``config.json`` and ``model.safetensors``, with the
image processor's ``preprocessor_config.json`` beside them. Nothing is downloaded and no code
from the folder runs: configs that ask for remote code are refused, and so are pickled
weights (``pytorch_model.bin``). The processor's resize and mean/std become the model's own
preprocessing (``ModelMeta.network_input``, ``mean``, ``std``), read from the JSON, so the
attack space stays [0, 1] pixels at the data's own size.
"""

from __future__ import annotations

import logging
from importlib import import_module
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfool.errors import CheckpointError, ConfigError
from medfool.models.classifier import Classifier, ModelMeta
from medfool.utils.io import read_json_object
from medfool.vocab import BINARY, MULTI_CLASS, MULTI_LABEL, Task

__all__ = ["is_hf_folder", "load_hf_classifier"]


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


class HFLogits(nn.Module):
    """A ``transformers`` classifier as a plain network: normalised pixels in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(pixel_values=x).logits
        return logits


def _size(pre: dict[str, Any], config: dict[str, Any], origin: Path) -> int:
    size = pre.get("size", pre.get("crop_size"))
    if isinstance(size, dict):
        h, w = size.get("height"), size.get("width")
        if isinstance(h, int) and isinstance(w, int):
            if h != w:
                raise CheckpointError(f"{origin}: non-square input {h}x{w} is not supported")
            return h
        size = size.get("shortest_edge")
    if isinstance(size, int) and size > 0:
        return size
    fallback = config.get("image_size")
    if isinstance(fallback, int) and fallback > 0:
        return fallback
    raise CheckpointError(f"{origin}: no input size in preprocessor_config.json ('size') or config.json "
                          "('image_size')")


def _normalisation(pre: dict[str, Any], channels: int, origin: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The processor's mean/std in [0, 1] pixel units. Without ``do_rescale`` the network was
    fed 0-255 values, which is the same as dividing mean and std by 255."""
    if pre.get("do_normalize", True):
        mean, std = pre.get("image_mean", [0.5] * channels), pre.get("image_std", [0.5] * channels)
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    if isinstance(mean, (int, float)):
        mean = [mean] * channels
    if isinstance(std, (int, float)):
        std = [std] * channels
    if len(mean) != channels or len(std) != channels:
        raise CheckpointError(f"{origin}: image_mean/image_std need {channels} values, got {len(mean)}/{len(std)}")
    # the network saw (v * f - mean) / std for 0-255 values v = 255 x, f the rescale factor (1
    # without do_rescale): that is (x - mean / (255 f)) / (std / (255 f)) in [0, 1] units
    f = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    return tuple(float(m) / (255 * f) for m in mean), tuple(float(s) / (255 * f) for s in std)


def _task(config: dict[str, Any], n: int) -> Task:
    if config.get("problem_type") == "multi_label_classification":
        return MULTI_LABEL
    return BINARY if n == 2 else MULTI_CLASS


def load_hf_classifier(folder: Path) -> tuple[Classifier, dict[str, Any]]:
    """The classifier in ``folder`` and a record naming where it came from."""
    config = read_json_object(folder / "config.json", CheckpointError, "JSON file")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
        if pickled:
            raise CheckpointError(f"{folder}: weights only as {pickled[0]}, a pickle, which medfool never loads; "
                                  "save them as model.safetensors (model.save_pretrained(folder))")
        if (folder / "model.safetensors.index.json").is_file():
            raise CheckpointError(f"{folder}: sharded weights are not supported; save them as one model.safetensors")
        raise CheckpointError(f"{folder}: no weights (model.safetensors) beside config.json")
    if config.get("auto_map"):
        raise CheckpointError(f"{folder}: config.json asks to run the folder's own Python code (auto_map), which "
                              "medfool never does")
    try:
        transformers = import_module("transformers")
    except ImportError:
        raise ConfigError("HuggingFace models need transformers, which is not installed: "
                          "pip install 'medfool[hf]'") from None
    transformers.utils.logging.disable_progress_bar()  # medfool's own progress lines are the ones shown
    quiet = logging.getLogger("transformers")
    old_level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, trust_remote_code=False,
            output_loading_info=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{folder}: not a loadable HuggingFace image classifier ({first})") from None
    finally:
        quiet.setLevel(old_level)
    problems = [(k, info.get(k) or []) for k in ("missing_keys", "mismatched_keys")]
    bad = [(k, v) for k, v in problems if v]
    if bad:
        key, names = bad[0]
        example = names[0] if isinstance(names[0], str) else names[0][0]
        raise CheckpointError(f"{folder}: model.safetensors does not fit config.json ({len(names)} "
                              f"{key.replace('_', ' ')}, e.g. {example})")
    id2label = config.get("id2label") or {}
    n = int(config.get("num_labels", len(id2label) or 2))
    names = tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n))
    channels = int(config.get("num_channels", 3))
    if channels not in (1, 3):
        raise CheckpointError(f"{folder}: num_channels must be 1 or 3, got {channels}")
    pre_path = folder / "preprocessor_config.json"
    pre = read_json_object(pre_path, CheckpointError, "JSON file") if pre_path.is_file() else {}
    size = _size(pre, config, folder)
    mean, std = _normalisation(pre, channels, folder)
    task = _task(config, n)
    if n == 1 and task != MULTI_LABEL:  # one logit: sigmoid of the positive class
        task, names = BINARY, (f"not {names[0]}", names[0])
    meta = ModelMeta(task=task, class_names=names, input_shape=(channels, size, size), mean=mean, std=std,
                     num_outputs=n, network_input=(channels, size, size), dataset=folder.name)
    classifier = Classifier(HFLogits(model), meta)
    record = {"source": "huggingface", "folder": str(folder), "model_type": config.get("model_type", ""),
              "preprocessing": {"size": size, "mean": list(mean), "std": list(std),
                                "from": pre_path.name if pre else "defaults (no preprocessor_config.json)"}}
    return classifier, record
