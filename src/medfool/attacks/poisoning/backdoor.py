"""Backdoor poisoning of a training set: BadNets (Gu et al. 2017), blended triggers (Chen et
al. 2017) and label-consistent "clean-label" backdoors (Turner et al. 2019).

Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model
Supply Chain", arXiv:1708.06733. Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep
Learning Systems Using Data Poisoning", arXiv:1712.05526. Turner, Tsipras & Madry,
"Label-Consistent Backdoor Attacks", arXiv:1912.02771.

The poisoner changes exactly ``round(rate * N)`` training samples, chosen with a seeded
generator among the candidates of the mode (other classes for all-to-one, every sample for
all-to-all, the target class for clean-label); every other sample, image and label, is
served unchanged from the original storage. Training on the result is the normal training
loop (:func:`medfool.models.train.fit` with ``train_split=``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from medfool.attacks.poisoning.triggers import Trigger, describe
from medfool.data.dataset import Split
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier
from medfool.vocab import MULTI_LABEL, Task

__all__ = [
    "MODES", "BackdoorConfig", "PoisonedSet", "attack_success", "check_feasible", "is_target", "poison",
    "poison_count", "surrogate_pgd", "target_labels",
]

MODES = ("all-to-one", "all-to-all")


@dataclass(frozen=True)
class BackdoorConfig:
    """What the attacker does to the training set.

    ``target``: the class the trigger should produce (all-to-one); for a multi-label model the
    one positive label, or ``None`` for "no finding" (every label negative). All-to-all maps
    class ``y`` to ``(y + 1) mod K``. ``clean_label`` poisons only target-class samples and keeps
    their labels; ``clean_label_eps`` (Linf, pixel units) is the adversarial perturbation that
    first makes them hard to learn from their content (0 turns it off).
    """

    rate: float = 0.05
    target: int | None = 0
    mode: str = "all-to-one"
    clean_label: bool = False
    clean_label_eps: float = 8 / 255
    clean_label_steps: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.rate < 1:
            raise ConfigError(f"poison rate must be a fraction in (0, 1), got {self.rate}")
        if self.mode not in MODES:
            raise ConfigError(f"backdoor mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.clean_label and self.mode != "all-to-one":
            raise ConfigError("a clean-label backdoor is all-to-one: its poisons keep their (target) labels")
        if not 0 <= self.clean_label_eps <= 1:
            raise ConfigError(f"clean_label_eps must be in [0, 1], got {self.clean_label_eps}")
        if self.clean_label_steps < 1:
            raise ConfigError(f"clean_label_steps must be >= 1, got {self.clean_label_steps}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PoisonedSet:
    """A poisoned training split and the ground truth of what was changed."""

    split: Split
    index: np.ndarray  # sorted indices of the poisoned samples
    original_labels: torch.Tensor  # labels of every sample before poisoning
    config: BackdoorConfig
    trigger: Trigger

    @property
    def mask(self) -> np.ndarray:
        """(N,) bool: True for poisoned samples."""
        out = np.zeros(len(self.split), dtype=bool)
        out[self.index] = True
        return out

    def without(self, flagged: np.ndarray) -> Split:
        """The training split minus the samples at ``flagged`` (what a defender retrains on)."""
        keep = np.setdiff1d(np.arange(len(self.split)), np.asarray(flagged, dtype=np.int64))
        return self.split.subset(keep)

    def summary(self) -> dict[str, Any]:
        n = len(self.split)
        return {"n_train": n, "n_poisoned": int(self.index.size), "rate": self.index.size / n,
                "trigger": describe(self.trigger), **self.config.to_json()}


def target_labels(y: torch.Tensor, cfg: BackdoorConfig, num_classes: int, task: Task) -> torch.Tensor:
    """The label the backdoor should produce for each true label ``y``."""
    if task == MULTI_LABEL:
        if cfg.mode == "all-to-all":
            raise ConfigError("all-to-all backdoors need single-label classes")
        out = torch.zeros_like(y)
        if cfg.target is not None:
            out[:, cfg.target] = 1
        return out
    if cfg.mode == "all-to-all":
        return (y + 1) % num_classes
    if cfg.target is None:
        raise ConfigError("an all-to-one backdoor needs a target class")
    return torch.full_like(y, cfg.target)


def is_target(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the label already equals the backdoor's target."""
    return (y == t).all(dim=1) if y.ndim == 2 else y == t


def _check_target(cfg: BackdoorConfig, num_classes: int) -> None:
    if cfg.target is not None and not 0 <= cfg.target < num_classes:
        raise ConfigError(f"backdoor target must be in [0, {num_classes - 1}], got {cfg.target}")


def poison_count(rate: float, n: int) -> int:
    """The exact number of poisons for a rate: round(rate * n), at least 1."""
    k = round(rate * n)
    if k < 1:
        raise ConfigError(f"a poison rate of {rate:g} of {n} training images is no image; use at least {1 / n:.2g}")
    return k


def check_feasible(train: Split, trigger: Trigger, cfg: BackdoorConfig, *, num_classes: int,
                   task: Task) -> tuple[np.ndarray, int]:
    """The candidate indices and the exact poison count, or a ConfigError before any work."""
    _check_target(cfg, num_classes)
    if trigger.image_shape != train.image_shape:
        raise ConfigError(f"trigger made for images of shape {trigger.image_shape}, the data has "
                          f"{train.image_shape}")
    y = train.labels
    t = target_labels(y, cfg, num_classes, task)
    candidates = np.flatnonzero((is_target(y, t) if cfg.clean_label else ~is_target(y, t)).numpy())
    k = poison_count(cfg.rate, len(train))
    if k > candidates.size:
        pool = "target-class" if cfg.clean_label else "non-target"
        raise ConfigError(f"a poison rate of {cfg.rate:g} needs {k} {pool} training images, there are "
                          f"{candidates.size}")
    return candidates, k


def poison(train: Split, trigger: Trigger, cfg: BackdoorConfig, *, num_classes: int, task: Task, seed: int,
           surrogate: Classifier | None = None, batch_size: int = 256) -> PoisonedSet:
    """Poison ``train``: stamp the trigger on ``round(rate * N)`` seeded picks and relabel them
    (dirty-label) or keep their labels (clean-label). Clean-label needs a ``surrogate`` (a model
    trained on clean data) for its adversarial perturbation unless ``clean_label_eps`` is 0."""
    candidates, k = check_feasible(train, trigger, cfg, num_classes=num_classes, task=task)
    y = train.labels
    t = target_labels(y, cfg, num_classes, task)
    gen = torch.Generator().manual_seed(seed)
    pick = np.sort(candidates[torch.randperm(candidates.size, generator=gen)[:k].numpy()])
    images = []
    for start in range(0, k, batch_size):
        chunk = pick[start:start + batch_size]
        x, yc = train.get(chunk)
        if cfg.clean_label and cfg.clean_label_eps > 0:
            # Turner et al.: an untargeted perturbation against a clean model, so the poisoned
            # target-class images no longer look like their class and the trigger is the easiest
            # feature left to explain their (correct) label
            x = surrogate_pgd(surrogate, x, yc, eps=cfg.clean_label_eps, steps=cfg.clean_label_steps,
                              seed=seed + start, needed_for="a clean-label backdoor with clean_label_eps > 0")
        images.append(trigger.apply(x))
    labels = y.clone()
    if not cfg.clean_label:
        labels[torch.as_tensor(pick)] = t[torch.as_tensor(pick)]
    split = train.replace(pick, torch.cat(images), labels.numpy())
    return PoisonedSet(split, pick, y.clone(), cfg, trigger)


def surrogate_pgd(surrogate: Classifier | None, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int,
                  seed: int, needed_for: str, target: torch.Tensor | None = None) -> torch.Tensor:
    """PGD (Linf, the full schedule) against a model trained on clean data, the step both
    clean-label backdoors and error-maximising poisons take. Shape: (n, C, H, W) on the CPU
    -> same, on the CPU."""
    from medfool.attacks import get_attack

    if surrogate is None:
        raise ConfigError(f"{needed_for} needs a surrogate model trained on clean data")
    attack = get_attack("pgd", eps=eps, steps=steps, early_stop=False)
    device = surrogate.device
    tgt = None if target is None else target.to(device)
    return attack(surrogate, x.to(device), y.to(device), target=tgt, seed=seed).x_adv.cpu()


def attack_success(model: Classifier, test: Split, trigger: Trigger, cfg: BackdoorConfig,
                   *, batch_size: int = 512) -> dict[str, Any]:
    """ASR: the share of triggered test images whose true label is not the target that the model
    reads as the target. Also the share among those the model classified correctly untriggered."""
    _check_target(cfg, model.num_classes)
    y = test.labels
    t = target_labels(y, cfg, model.num_classes, model.task)
    eligible = np.flatnonzero((~is_target(y, t)).numpy())
    hits, correct, hits_correct = 0, 0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, eligible.size, batch_size):
            idx = eligible[start:start + batch_size]
            x, yc = test.get(idx)
            x = x.to(model.device)
            tc = t[torch.as_tensor(idx)].to(model.device)
            yc = yc.to(model.device)
            clean_ok = is_target(model.predict(x), yc)
            hit = is_target(model.predict(trigger.apply(x)), tc)
            hits += int(hit.sum())
            correct += int(clean_ok.sum())
            hits_correct += int((hit & clean_ok).sum())
    n = int(eligible.size)
    return {"asr": hits / n if n else float("nan"), "n": n,
            "asr_on_correct": hits_correct / correct if correct else float("nan"), "n_correct": correct}
