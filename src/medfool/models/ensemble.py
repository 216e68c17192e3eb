"""Ensembles as one network: several classifiers (architectures or seeds), their logits
averaged or their votes counted.

Paul, Schabath, Gillies, Hall & Goldgof, "Mitigating adversarial attacks on medical image
understanding systems", ISBI 2020 (three CNNs on lung CT, with adversarial training). The
ensemble is registered as the architecture ``ensemble``: its members' metadata (architecture,
normalisation, input transforms) are its options and their weights its tensors, so it saves,
loads and is attacked as one model. The wrapping Classifier's own normalisation is the
identity; each member normalises for itself.

``combine="mean"`` averages logits (differentiable). ``combine="vote"`` answers with the
(smoothed) log vote share: deployed, its gradient is zero, so a naive attacker is blind. Every
loss value read through a vote is piecewise constant too, so the adaptive attacker
(``Classifier.adaptive()``) attacks a differentiable surrogate of the same members, the mean of
their log-probabilities, whose decisions are moved to the vote's
(:func:`~medfool.models.classifier.decide_as`): it is scored by the surrogate and judged by
the vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medfool.errors import ConfigError
from medfool.models.architectures import build, register
from medfool.models.classifier import Classifier, ModelMeta, decide_as, logits_to_labels
from medfool.models.preprocess import AdaptiveLayer
from medfool.vocab import COMBINE, MULTI_CLASS, MULTI_LABEL, Combine, Task

__all__ = ["COMBINE", "EnsembleNetwork", "ensemble_classifier"]


class EnsembleNetwork(AdaptiveLayer):
    def __init__(self, members: Sequence[Classifier], combine: Combine, task: Task) -> None:
        super().__init__()
        if combine not in COMBINE:
            raise ConfigError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(x) for m in self.members])                      # (M, n, K)
        if self.combine == "mean":
            return logits.mean(dim=0)
        m, k = logits.shape[0], logits.shape[2]
        sigmoid = self.task == MULTI_LABEL or k == 1
        if sigmoid:
            share = (logits > 0).float().mean(dim=0)                              # positive share per output
            voted = torch.logit((share * m + 0.5) / (m + 1))
            smooth = F.logsigmoid(logits).mean(0) - F.logsigmoid(-logits).mean(0)
        else:
            labels = torch.stack([logits_to_labels(z, self.task) for z in logits])  # (M, n)
            share = F.one_hot(labels, k).float().mean(dim=0)
            voted = torch.log((share * m + 0.5 / k) / (m + 0.5))
            smooth = F.log_softmax(logits, dim=2).mean(dim=0)
        # deployed: the vote, with a zero gradient (attached, so a naive attacker's autograd runs);
        # adaptive: the smooth surrogate's scores and gradient, the vote's decisions
        return decide_as(smooth, voted, self.task) if self.bpda else voted + 0 * smooth

    @property
    def adapts(self) -> bool:
        """A mean ensemble is differentiable as deployed: attacking it adaptively would repeat the
        naive run (its members' own defence layers still count)."""
        return self.combine == "vote"


@register("ensemble")
def _ensemble(*, in_channels: int, num_outputs: int, members: list[dict[str, Any]], combine: Combine = "mean"
              ) -> nn.Module:
    built = []
    for i, data in enumerate(members):
        meta = ModelMeta.from_json(data)
        if meta.arch is None:
            raise ConfigError(f"ensemble member {i} has no architecture to rebuild")
        if meta.input_shape[0] != in_channels or meta.num_outputs != num_outputs:
            raise ConfigError(f"ensemble member {i} takes {meta.input_shape[0]} channel(s) and gives "
                              f"{meta.num_outputs} output(s); the ensemble needs {in_channels} and {num_outputs}")
        net = build(meta.arch, in_channels=in_channels, num_outputs=num_outputs, **meta.arch_kwargs)
        built.append(Classifier(net, meta))
    task = ModelMeta.from_json(members[0]).task if members else MULTI_CLASS
    return EnsembleNetwork(built, combine, task)


def ensemble_classifier(members: Sequence[Classifier], combine: Combine = "mean") -> Classifier:
    """One classifier from several trained ones; they must agree on task, classes and input shape."""
    if len(members) < 2:
        raise ConfigError(f"an ensemble needs at least two models, got {len(members)}")
    first = members[0].meta
    for i, m in enumerate(members[1:], 1):
        if (m.meta.task, m.meta.class_names, m.meta.input_shape) != (first.task, first.class_names, first.input_shape):
            raise ConfigError(f"ensemble member {i} ({m.meta.task}, {len(m.meta.class_names)} classes, input "
                              f"{m.meta.input_shape}) does not match member 0 ({first.task}, "
                              f"{len(first.class_names)} classes, input {first.input_shape})")
        if m.meta.arch is None:
            raise ConfigError(f"ensemble member {i} is not built from the architecture registry (TorchScript?); "
                              "ensembles are saved as registry architectures")
    if first.arch is None:
        raise ConfigError("ensemble member 0 is not built from the architecture registry (TorchScript?)")
    c = first.input_shape[0]
    outputs = {m.meta.num_outputs for m in members}
    if len(outputs) != 1:
        raise ConfigError(f"ensemble members give different numbers of outputs: {sorted(outputs)}")
    meta = ModelMeta(task=first.task, class_names=first.class_names, input_shape=first.input_shape,
                     mean=(0.0,) * c, std=(1.0,) * c, num_outputs=first.num_outputs,
                     critical_classes=first.critical_classes, arch="ensemble",
                     arch_kwargs={"members": [m.meta.to_json() for m in members], "combine": combine},
                     dataset=first.dataset)
    net = EnsembleNetwork([m.cpu() for m in members], combine, first.task)
    return Classifier(net, meta)
