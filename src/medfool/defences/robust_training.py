"""Robust training objectives for the one training loop (:func:`medfool.models.train.fit`).

* ``pgd``: Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards deep learning models resistant to
  adversarial attacks", ICLR 2018: train on PGD examples (random start, ``steps`` signed steps of
  2.5 eps / steps inside the Linf ball).
* ``trades``: Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically principled trade-off
  between robustness and accuracy", ICML 2019: clean loss + beta x KL(f(x) || f(x')), x' found
  by PGD on that KL from a tiny Gaussian start.
* ``fgsm-rs``: Wong, Rice & Kolter, "Fast is better than free", ICLR 2020: one signed step of
  1.25 eps from a uniform random start.
* ``noise``: Gaussian noise augmentation at ``sigma`` (Cohen, Rosenfeld & Kolter, ICML 2019),
  the base classifier of randomized smoothing.

Examples are crafted with the model in eval mode (batch-norm statistics untouched by the
attack), then the update runs in train mode. Optional stain and flip EOT (``eot``) jitters
the H&E stains of each batch before crafting, so the robustness learnt holds across scanners.
Each epoch reports the robust accuracy of a PGD-10 attack on the first ``val_images``
validation images, and epochs are selected on the mean of clean and robust accuracy. A
smoothing base model (``noise``) is selected on its accuracy under Gaussian noise at its sigma
over the whole validation split (the same seeded noise every epoch): the smoothed classifier
votes over noisy copies, so clean accuracy is not what it is built from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from medfool.attacks.transforms import hed_jitter
from medfool.data.dataset import Split
from medfool.errors import ConfigError
from medfool.models.classifier import Classifier, logits_to_labels
from medfool.models.metrics import loss_fn
from medfool.utils.rng import GeneratorDraw
from medfool.vocab import MULTI_LABEL, Task

__all__ = ["METHODS", "RobustObjective", "noisy_accuracy", "pgd_linf", "robust_accuracy"]

METHODS = ("pgd", "trades", "fgsm-rs", "noise")


def _correct(logits: torch.Tensor, y: torch.Tensor, task: Task) -> torch.Tensor:
    pred = logits_to_labels(logits, task)
    return (pred == y).all(dim=1) if task == MULTI_LABEL else pred == y


def pgd_linf(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
             alpha: float | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Loss-maximising PGD (Madry et al.) with a uniform random start: the inner maximisation of
    adversarial training. Gradients flow to the input only; the model's mode is the caller's."""
    alpha = alpha if alpha is not None else 2.5 * eps / steps
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x) if generator is not None \
        else torch.rand_like(x)
    delta = ((2 * noise - 1) * eps).requires_grad_(True)
    for _ in range(steps):
        loss = loss_fn(model((x + delta).clamp(0, 1)), y, model.task)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps).requires_grad_(True)
    return (x + delta.detach()).clamp(0, 1)


def _kl(clean: torch.Tensor, adv: torch.Tensor, task: Task) -> torch.Tensor:
    """KL(p_clean || p_adv) per batch, for softmax or (per output) sigmoid models."""
    if task == MULTI_LABEL or clean.shape[1] == 1:
        p = torch.sigmoid(clean)
        lp, lq = F.logsigmoid(clean), F.logsigmoid(adv)
        ln, lnq = F.logsigmoid(-clean), F.logsigmoid(-adv)
        return (p * (lp - lq) + (1 - p) * (ln - lnq)).sum(dim=1).mean()
    return F.kl_div(F.log_softmax(adv, dim=1), F.log_softmax(clean, dim=1), reduction="batchmean", log_target=True)


@torch.no_grad()
def robust_accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
                    batch_size: int = 256, seed: int = 0) -> float:
    """Accuracy under loss-maximising PGD (the per-epoch check, not the audit's ensemble)."""
    gen = torch.Generator().manual_seed(seed)
    right = 0
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size].to(model.device), y[start:start + batch_size].to(model.device)
        with torch.enable_grad():
            xa = pgd_linf(model, xb, yb, eps, steps, generator=gen)
        right += int(_correct(model(xa), yb, model.task).sum())
    return right / max(1, x.shape[0])


@torch.no_grad()
def noisy_accuracy(model: Classifier, val: Split, sigma: float, *, seed: int = 0, batch_size: int = 256) -> float:
    """Accuracy on the whole split under Gaussian noise of ``sigma`` (pixel units, not clipped, as
    randomized smoothing adds it), one draw per image from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    right = 0
    for start in range(0, len(val), batch_size):
        x, y = val.get(range(start, min(start + batch_size, len(val))))
        noise = torch.randn(x.shape, generator=gen)
        x, y = (x + sigma * noise).to(model.device), y.to(model.device)
        right += int(_correct(model(x), y, model.task).sum())
    return right / max(1, len(val))


@dataclass(frozen=True)
class RobustObjective:
    """One robust training objective; its settings go into the checkpoint's record."""

    method: str = "pgd"
    eps: float = 8 / 255
    steps: int = 7
    alpha: float | None = None      # PGD step; default 2.5 eps / steps (fgsm-rs: 1.25 eps)
    beta: float = 6.0               # TRADES trade-off
    sigma: float = 0.25             # noise: Gaussian standard deviation in [0, 1] pixel units
    eot: bool = False               # stain jitter before crafting (histology)
    val_images: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"robust training method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0 < self.eps <= 1:
            raise ConfigError(f"eps must be in (0, 1] (pixel units; 8/255 = {8 / 255:.4f}), got {self.eps}")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.beta < 0 or self.sigma <= 0:
            raise ConfigError(f"beta must be >= 0 and sigma > 0, got beta {self.beta}, sigma {self.sigma}")
        if self.val_images < 0:
            raise ConfigError(f"val_images must be >= 0, got {self.val_images}")
        object.__setattr__(self, "_gen", torch.Generator().manual_seed(self.seed))

    @property
    def generator(self) -> torch.Generator:
        gen: torch.Generator = self.__dict__["_gen"]
        return gen

    @property
    def attack_steps(self) -> int:
        """Gradient steps per training batch (the theoretical cost is steps + 1 passes)."""
        return {"pgd": self.steps, "trades": self.steps, "fgsm-rs": 1, "noise": 0}[self.method]

    def loss(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        task = model.task
        if self.method == "noise":
            noise = torch.randn(x.shape, generator=self.generator).to(x)
            return loss_fn(model(x + self.sigma * noise), y, task)
        if self.eot and x.shape[1] == 3:
            x = hed_jitter(x, GeneratorDraw(self.generator))
        model.eval()
        try:
            if self.method == "pgd":
                x_adv = pgd_linf(model, x, y, self.eps, self.steps, self.alpha, generator=self.generator)
            elif self.method == "fgsm-rs":
                x_adv = pgd_linf(model, x, y, self.eps, 1, self.alpha or 1.25 * self.eps, generator=self.generator)
            else:
                x_adv = self._trades_example(model, x)
        finally:
            model.train()
        if self.method != "trades":
            return loss_fn(model(x_adv), y, task)
        clean = model(x)
        return loss_fn(clean, y, task) + self.beta * _kl(clean, model(x_adv), task)

    def _trades_example(self, model: Classifier, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps
        with torch.no_grad():
            clean = model(x)
        start = 0.001 * torch.randn(x.shape, generator=self.generator).to(x)
        delta = start.requires_grad_(True)
        for _ in range(self.steps):
            kl = _kl(clean, model((x + delta).clamp(0, 1)), model.task)
            (grad,) = torch.autograd.grad(kl, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-self.eps, self.eps).requires_grad_(True)
        return (x + delta.detach()).clamp(0, 1)

    def validate(self, model: Classifier, val: Split) -> dict[str, float]:
        if self.method == "noise":
            return {"val_noisy_accuracy": noisy_accuracy(model, val, self.sigma, seed=self.seed)}
        if self.val_images == 0:
            return {}
        n = min(len(val), self.val_images)
        x, y = val.get(range(n))
        return {"val_robust_accuracy": robust_accuracy(model, x, y, self.eps, steps=10, seed=self.seed)}

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["paper"] = {"pgd": "Madry et al., ICLR 2018", "trades": "Zhang et al., ICML 2019",
                        "fgsm-rs": "Wong et al., ICLR 2020", "noise": "Cohen et al., ICML 2019"}[self.method]
        return out
