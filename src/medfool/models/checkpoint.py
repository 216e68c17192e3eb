"""Checkpoints: safetensors weights with the model's JSON metadata in the file header.

Nothing here unpickles arbitrary objects. Accepted model files:

* medfool checkpoints (``.safetensors`` with a ``medfool`` header entry);
* bare ``.safetensors`` weights, described by a JSON sidecar (same stem) with the
  :class:`ModelMeta` fields, including ``arch``;
* TorchScript archives (``torch.jit.save``), described by a JSON sidecar;
* plain PyTorch state dicts (``torch.save(model.state_dict())``), loaded with
  ``torch.load(weights_only=True)``, described by a JSON sidecar naming the ``arch``;
* HuggingFace image classifiers: a folder with ``config.json`` and ``model.safetensors``
  (:mod:`medfool.models.huggingface`);
* the folder ``medfool train --out`` writes, which stands for its ``model.safetensors``.

``medfool describe`` writes the sidecar, checked against the weights, so nobody writes it by hand.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from medfool.errors import CheckpointError, ConfigError
from medfool.models.architectures import build
from medfool.models.classifier import Classifier, ModelMeta
from medfool.models.huggingface import is_hf_folder, load_hf_classifier
from medfool.utils.io import atomic_write_bytes

__all__ = ["FORMAT", "MODEL_FILE", "check_finite", "load_classifier", "model_file", "read_header", "save_checkpoint"]

FORMAT = "medfool-checkpoint/1"
MODEL_FILE = "model.safetensors"  # what a training run writes into its output folder


def save_checkpoint(model: Classifier, path: str | Path, record: dict[str, Any] | None = None) -> Path:
    """Write weights + metadata atomically. ``record`` holds training facts (metrics, seed, versions)."""
    if model.meta.arch is None:
        raise ConfigError("only models built from the architecture registry can be saved as medfool checkpoints")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "medfool": json.dumps({"model": model.meta.to_json(), "record": record or {}})}
    target = Path(path)
    atomic_write_bytes(target, st_save(tensors, metadata=header))
    return target


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a medfool checkpoint (model + training record), without the weights."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            n = int.from_bytes(handle.read(8), "little")
            if n <= 0 or n > 100_000_000:
                raise CheckpointError(f"{path}: not a safetensors file (bad header length)")
            header = json.loads(handle.read(n))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if "medfool" not in meta:
        return {}
    try:
        data = json.loads(meta["medfool"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: damaged medfool metadata ({exc})") from None
    return data if isinstance(data, dict) else {}


def _sidecar_meta(path: Path) -> ModelMeta:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise CheckpointError(f"{path}: has no medfool metadata; put a JSON file {sidecar.name} beside it "
                              "with task, class_names, input_shape, mean, std, num_outputs (and arch)")
    try:
        data = json.loads(sidecar.read_text())
        return ModelMeta.from_json(data.get("model", data))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{sidecar}: not a readable JSON model description ({exc})") from None
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{sidecar}: bad model description ({exc})") from None


def _from_state_dict(path: Path, meta: ModelMeta, state: dict[str, torch.Tensor]) -> Classifier:
    if meta.arch is None:
        raise CheckpointError(f"{path}: plain weights need an 'arch' in their metadata to be rebuilt")
    try:
        network = build(meta.arch, in_channels=meta.input_shape[0], num_outputs=meta.num_outputs, **meta.arch_kwargs)
    except (ConfigError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: cannot build architecture {meta.arch!r} with {meta.arch_kwargs} ({first})") \
            from None
    model = Classifier(network, meta)
    # Accept both a whole-Classifier state dict and a bare network state dict.
    if not any(k.startswith("network.") for k in state):
        state = {f"network.{k}": v for k, v in state.items()}
        state.setdefault("mean", model.mean.clone())
        state.setdefault("std", model.std.clone())
    own = model.state_dict()
    shape_errors = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shape_errors:  # before load_state_dict, which raises on the first mismatch in torch's words
        k = shape_errors[0]
        raise CheckpointError(f"{path}: weights do not fit the metadata: {k} is {tuple(state[k].shape)}, the "
                              f"{meta.arch!r} model described ({meta.num_outputs} outputs, {meta.arch_kwargs}) "
                              f"needs {tuple(own[k].shape)}")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)} tensor(s) e.g. {result.missing_keys[0]}")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected e.g. {result.unexpected_keys[0]}")
        raise CheckpointError(f"{path}: weights do not fit architecture {meta.arch!r} ({'; '.join(parts)})")
    return model


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in n or n.endswith("constants.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def model_file(path: str | Path) -> Path:
    """The model a path names: a run folder (what ``medfool train --out`` writes) stands for its
    ``model.safetensors``; a HuggingFace folder (``config.json``) and any other path are kept."""
    path = Path(path)
    if not path.is_dir() or is_hf_folder(path):
        return path
    if (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    raise CheckpointError(f"{path}: a folder without {MODEL_FILE} (what 'medfool train --out' writes) or config.json "
                          "(a HuggingFace model)")


def load_classifier(path: str | Path, *, device: torch.device | str = "cpu",
                    meta: ModelMeta | None = None) -> tuple[Classifier, dict[str, Any]]:
    """Load any accepted model file; returns the classifier (in eval mode) and its training record.
    ``meta`` describes a file that carries no description of its own in place of its sidecar."""
    path = model_file(path)
    if is_hf_folder(path):
        hf, hf_record = load_hf_classifier(path)
        check_finite(hf, str(path))
        return hf.to(device).eval(), hf_record
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    record: dict[str, Any] = {}
    given = meta

    def described() -> ModelMeta:
        return given if given is not None else _sidecar_meta(path)

    if path.suffix == ".safetensors":
        header = read_header(path)
        try:
            state = st_load(path.read_bytes())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file, truncated or corrupt ({exc})") from None
        if header:
            try:
                meta = ModelMeta.from_json(header["model"])
            except (KeyError, TypeError, ConfigError) as exc:
                raise CheckpointError(f"{path}: damaged medfool metadata ({exc})") from None
            record = header.get("record", {})
        else:
            meta = described()
        model = _from_state_dict(path, meta, state)
    elif _is_torchscript(path):
        meta = described()
        try:
            network = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, OSError) as exc:
            raise CheckpointError(f"{path}: not a loadable TorchScript archive ({exc})") from None
        model = Classifier(network, meta)
    else:
        meta = described()
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise CheckpointError(f"{path}: refused: contains pickled objects other than plain tensors, which "
                                  "medfool never unpickles") from None
        except Exception as exc:  # noqa: BLE001  (torch's unpickler raises IndexError, KeyError... on junk bytes)
            first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{path}: not a readable PyTorch weights file ({first})") from None
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
        model = _from_state_dict(path, meta, obj)
    check_finite(model, str(path))
    return model.to(device).eval(), record


def check_finite(model: Classifier, origin: str) -> None:
    """Refuse a model with NaN or infinite weights or normalisation: it would answer with NaN
    logits, which every metric downstream turns into a plausible-looking number."""
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{origin}: the model's {name} holds NaN or infinite values")
