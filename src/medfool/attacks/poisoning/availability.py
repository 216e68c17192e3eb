"""Availability poisoning: degrade a model's accuracy for everyone by tampering with its
training set, in the spirit of Yang et al.'s gradient-crafted poisons.

Yang, Wu, Li, Zhu & Wu, "Generative Poisoning Attack Method Against Neural Networks",
arXiv:1703.01340 (2017): poisons crafted with the gradient of a model's loss.
Fowl, Goldblum, Chiang, Geiping, Czaja & Goldstein, "Adversarial Examples Make Strong
Poisons", NeurIPS 2021: error-maximising noise, a class-targeted PGD perturbation against a
model trained on clean data, labels kept. Label flipping (a random other class) is the
baseline that needs no model at all.

Both change exactly ``round(rate * N)`` seeded picks; ``rate`` may be 1 (every image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medfool.attacks.poisoning.backdoor import poison_count, surrogate_pgd
from medfool.data.dataset import Split
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier
from medfool.vocab import MULTI_LABEL, Task

__all__ = ["METHODS", "AvailabilityConfig", "poison_availability"]

METHODS = ("error-max", "label-flip")


@dataclass(frozen=True)
class AvailabilityConfig:
    method: str = "error-max"
    rate: float = 0.5
    eps: float = 8 / 255  # error-max: Linf budget of the noise
    steps: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"availability method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0 < self.rate <= 1:
            raise ConfigError(f"poison rate must be a fraction in (0, 1], got {self.rate}")
        if not 0 < self.eps <= 1:
            raise ConfigError(f"eps must be in (0, 1], got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")


def poison_availability(train: Split, cfg: AvailabilityConfig, *, num_classes: int, task: Task, seed: int,
                        surrogate: Classifier | None = None, batch_size: int = 256) -> tuple[Split, np.ndarray]:
    """The poisoned training split and the (sorted) indices that were changed."""
    k = poison_count(cfg.rate, len(train))
    gen = torch.Generator().manual_seed(seed)
    pick = np.sort(torch.randperm(len(train), generator=gen)[:k].numpy())
    labels = train.labels.clone()
    if cfg.method == "label-flip":
        y = labels[torch.as_tensor(pick)]
        if task == MULTI_LABEL:
            labels[torch.as_tensor(pick)] = 1 - y  # every finding flipped
        else:  # a uniformly drawn *other* class
            shift = torch.randint(1, num_classes, (k,), generator=gen)
            labels[torch.as_tensor(pick)] = (y + shift) % num_classes
        return train.replace(pick, train.get(pick)[0], labels.numpy()), pick
    if task == MULTI_LABEL:
        raise ConfigError("error-maximising poisons are defined here for single-label classes")
    images = []
    for start in range(0, k, batch_size):
        x, y = train.get(pick[start:start + batch_size])
        # class-targeted (y -> y + 1): Fowl et al. find it poisons harder than untargeted noise
        images.append(surrogate_pgd(surrogate, x, y, eps=cfg.eps, steps=cfg.steps, seed=seed + start,
                                    needed_for="error-maximising poisoning", target=(y + 1) % num_classes))
    return train.replace(pick, torch.cat(images), labels.numpy()), pick
