"""Any ``nn.Module`` as a medfool model, from Python or as a described file.

``wrap`` is the one call a user needs to attack their own network: it puts the normalisation
(and, where the network wants another size or three channels, the resize) inside the model,
so attacks work on [0, 1] pixels. ``describe`` builds the JSON description a TorchScript or
state-dict file needs and proves it against the weights before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from medfool.errors import CheckpointError, ConfigError
from medfool.models.checkpoint import load_classifier
from medfool.models.classifier import Classifier, ModelMeta
from medfool.vocab import BINARY, Task

__all__ = ["check_answers", "describe", "wrap"]


def _per_channel(values: float | Sequence[float] | None, channels: int, default: float, what: str) -> tuple[float, ...]:
    if values is None:
        return (default,) * channels
    if isinstance(values, (int, float)):
        return (float(values),) * channels
    out = tuple(float(v) for v in values)
    if len(out) == 1:
        return out * channels
    if len(out) != channels:
        raise ConfigError(f"{what} needs 1 or {channels} values (one per channel the network takes), got {len(out)}")
    return out


def _meta(*, task: Task, classes: Sequence[str], input_shape: Sequence[int], num_outputs: int | None,
          mean: float | Sequence[float] | None, std: float | Sequence[float] | None,
          network_input: Sequence[int] | None, critical: Sequence[int], arch: str | None = None) -> ModelMeta:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3:
        raise ConfigError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    net = tuple(int(v) for v in network_input) if network_input is not None else None
    channels = (net or shape)[0]
    outputs = num_outputs if num_outputs is not None else (2 if task == BINARY else len(classes))
    return ModelMeta(task=task, class_names=tuple(classes), input_shape=shape,  # type: ignore[arg-type]
                     mean=_per_channel(mean, channels, 0.0, "mean"), std=_per_channel(std, channels, 1.0, "std"),
                     num_outputs=outputs, critical_classes=tuple(critical), arch=arch,
                     network_input=net)  # type: ignore[arg-type]


def check_answers(model: Classifier, origin: str) -> None:
    """Run the model on two grey images of its input shape: a description that does not match
    the network (wrong channel count, size or number of outputs) fails here, in words."""
    x = torch.full((2, *model.meta.input_shape), 0.5, device=model.device)
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        # TorchScript puts its own banner first and torch's message last
        first = (lines[-1] if lines and "TorchScript" in lines[0] else lines[0] if lines else type(exc).__name__)[:200]
        raise CheckpointError(f"{origin}: the network does not take images of shape {model.meta.input_shape} "
                              f"(C, H, W) as described ({first})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(f"{origin}: the network must return logits of shape (N, outputs), got {shape}")
    if out.shape[1] != model.meta.num_outputs:
        hint = " (a binary model with one logit: give 1 output)" if out.shape[1] == 1 else ""
        raise CheckpointError(f"{origin}: the network gives {out.shape[1]} output(s), the description says "
                              f"{model.meta.num_outputs}{hint}")


def wrap(module: nn.Module, *, task: Task, classes: Sequence[str], input_shape: Sequence[int],
         mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
         num_outputs: int | None = None, network_input: Sequence[int] | None = None,
         critical: Sequence[int] = ()) -> Classifier:
    """``module`` (normalised images -> logits) as a medfool model that takes [0, 1] pixels.

    ``mean``/``std``: the normalisation the network was trained with, in [0, 1] pixel units
    (ImageNet's 0.485/0.229..., not 124/58); one value or one per channel; default none.
    ``network_input`` (C, H, W): what the network takes when it differs from the images'
    ``input_shape``; they are resized and grey ones repeated to RGB inside the model.
    ``num_outputs``: default one per class (two for binary; give 1 for a one-logit model).
    """
    meta = _meta(task=task, classes=classes, input_shape=input_shape, num_outputs=num_outputs, mean=mean, std=std,
                 network_input=network_input, critical=critical)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    model = Classifier(module, meta).to(device).eval()
    check_answers(model, type(module).__name__)
    return model


def describe(path: Path, *, task: Task, classes: Sequence[str], input_shape: Sequence[int],
             mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
             num_outputs: int | None = None, network_input: Sequence[int] | None = None,
             critical: Sequence[int] = (), arch: str | None = None,
             arch_kwargs: dict[str, object] | None = None) -> ModelMeta:
    """The description of the model file ``path``, proven against its weights (they load into
    ``arch`` and the network answers with the stated number of outputs)."""
    meta = _meta(task=task, classes=classes, input_shape=input_shape, num_outputs=num_outputs, mean=mean, std=std,
                 network_input=network_input, critical=critical, arch=arch)
    if arch_kwargs:
        meta = ModelMeta.from_json({**meta.to_json(), "arch_kwargs": dict(arch_kwargs)})
    model, _ = load_classifier(path, meta=meta)
    check_answers(model, str(path))
    return meta
