"""The one training loop in medfool (clean models, and later poisoned or adversarially trained ones).

Seeded and reproducible: model initialisation, batch order, balanced sampling and
augmentation all draw from generators seeded by ``TrainConfig.seed``. Early stopping keeps
the weights of the epoch with the best validation accuracy (validation loss breaks ties; a
defence's objective can change the accuracy: see ``selection_score``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from medfool.data.dataset import Dataset, Split
from medfool.data.transforms import augment, check_augment
from medfool.errors import ConfigError
from medfool.models.architectures import build
from medfool.models.classifier import Classifier, ModelMeta, channel_stats
from medfool.models.metrics import evaluate, loss_fn
from medfool.models.zoo import DEFAULT_SIZE, NEEDS_SIZE, ZOO_EMA, ZOO_LR, ZOO_WEIGHT_DECAY, in_zoo, min_size
from medfool.utils.progress import progress
from medfool.utils.repro import environment, seed_everything
from medfool.vocab import MULTI_LABEL, Task

__all__ = ["Objective", "Team", "TrainConfig", "TrainResult", "auto_epochs", "build_classifier", "fit",
           "resolve_augment", "selection_score"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training options; every field is recorded in the checkpoint."""

    arch: str = "small_cnn"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None  # None: auto_epochs(len(train)), recorded in the result
    batch_size: int = 128
    lr: float | None = None  # None: the architecture's default (see ``rate``)
    # None: the architecture's default (see ``decay``); the record holds the value used
    weight_decay: float | None = None
    # decay of an exponential moving average of the weights, which is what gets validated and
    # kept; 0: off. None: the architecture's default (see ``ema_decay``)
    ema: float | None = None
    balanced: bool = False
    patience: int = 10
    augment: str = "auto"
    seed: int = 0
    time_limit_s: float | None = None
    # the pixel size the network sees; smaller or larger images are resized inside the model.
    # None: the data's own size, or the architecture's smallest input if the data is smaller
    input_size: int | None = None

    def __post_init__(self) -> None:
        if self.input_size is not None and self.input_size < min_size(self.arch):
            raise ConfigError(f"{self.arch} needs inputs of at least {min_size(self.arch)} px, "
                              f"got input_size {self.input_size}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not (0 < self.lr < 10):
            raise ConfigError(f"lr must be in (0, 10), got {self.lr}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.patience < 1:
            raise ConfigError(f"patience must be >= 1, got {self.patience}")
        if self.augment != "auto":
            try:
                check_augment(self.augment)
            except ValueError as e:
                raise ConfigError(f"{e} (or auto)") from None
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            raise ConfigError(f"time_limit_s must be > 0, got {self.time_limit_s}")

    def _by_arch(self, given: float | None, zoo: float, own: float) -> float:
        """The value given, else the MONAI networks' default or medfool's CNNs' default."""
        if given is not None:
            return given
        return zoo if in_zoo(self.arch) else own

    @property
    def rate(self) -> float:
        """The peak learning rate used: 3e-3 for medfool's CNNs, ZOO_LR for the MONAI networks."""
        return self._by_arch(self.lr, ZOO_LR, 3e-3)

    @property
    def decay(self) -> float:
        """The AdamW weight decay used: 5e-4 for medfool's CNNs, ZOO_WEIGHT_DECAY for the MONAI
        networks."""
        return self._by_arch(self.weight_decay, ZOO_WEIGHT_DECAY, 5e-4)

    @property
    def ema_decay(self) -> float:
        """The weight average's decay used: 0 (off) for medfool's CNNs, ZOO_EMA for the MONAI
        networks."""
        return self._by_arch(self.ema, ZOO_EMA, 0.0)


class Objective(Protocol):
    """What a training step minimises, when it is not the plain loss on the batch: defences
    (adversarial training, noise for randomized smoothing) plug in here so that every model,
    defended or not, comes out of the same seeded loop with the same record."""

    def loss(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch loss to minimise (the model is in train mode on entry and must be on exit)."""
        ...

    def validate(self, model: Classifier, val: Split) -> dict[str, float]:
        """Extra per-epoch validation figures (model in eval mode). They can change what epoch
        selection maximises: see :func:`selection_score`."""
        ...

    def describe(self) -> dict[str, Any]:
        """The objective's settings, for the checkpoint's record."""
        ...


class Team(Protocol):
    """The other processes of a data-parallel run (:mod:`medfool.models.distributed` over
    torch.distributed). Every member runs :func:`fit` with the same settings: the batch order is
    drawn identically everywhere and each member takes its share of every batch; gradients are
    averaged before each step, so all members hold the same weights; member 0 validates and the
    others follow its epoch selection."""

    rank: int
    size: int

    def average_gradients(self, params: list[torch.nn.Parameter], n_local: int, n_batch: int) -> None:
        """Replace each member's gradients (of its mean loss over ``n_local`` images) by the
        gradient of the mean loss over the whole batch of ``n_batch`` images."""
        ...

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm statistics) over the members."""
        ...

    def share(self, row: dict[str, float]) -> dict[str, float]:
        """Member 0's ``row`` on every member."""
        ...

    def describe(self) -> dict[str, Any]:
        """How the run was spread, for the record."""
        ...


@dataclass
class TrainResult:
    model: Classifier
    history: list[dict[str, float]]
    best_epoch: int
    val: dict[str, Any]
    test: dict[str, Any] | None
    wall_s: float
    record: dict[str, Any]


def selection_score(row: dict[str, float]) -> tuple[str, float]:
    """What epoch selection maximises, and its value for one epoch's validation ``row``: a
    smoothing base model's accuracy under its Gaussian noise (``val_noisy_accuracy``: its smoothed
    classifier votes over noisy copies); under adversarial training the mean of clean and robust
    accuracy (a constant answer is "robust"); otherwise clean validation accuracy."""
    if "val_noisy_accuracy" in row:
        return "val_noisy_accuracy", row["val_noisy_accuracy"]
    if "val_robust_accuracy" in row:
        return "mean of val_accuracy and val_robust_accuracy", (row["val_accuracy"] + row["val_robust_accuracy"]) / 2
    return "val_accuracy", row["val_accuracy"]


def auto_epochs(n_train: int) -> int:
    """About 60,000 image presentations, between 10 and 30 epochs: small sets (the 700-tile
    PathMNIST training part) need many passes, large ones converge in a few."""
    return int(min(30, max(10, math.ceil(60_000 / max(1, n_train)))))


def resolve_augment(kind: str, n_channels: int, arch: str) -> str:
    """'auto': all 8 flips/rotations for RGB tiles (histology, dermoscopy), none for grayscale,
    where orientation can carry anatomy (a chest X-ray's heart is on one side). The large MONAI
    networks also get small random shifts: they memorise a few thousand images' exact framing."""
    if kind != "auto":
        return kind
    base = "dihedral" if n_channels == 3 else "none"
    if not in_zoo(arch):
        return base
    return "shift" if base == "none" else f"{base}+shift"


def _average_into(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, over weights and BatchNorm statistics
    (integer buffers such as BatchNorm's batch counter are copied)."""
    with torch.no_grad():
        for a, m in zip(average.state_dict().values(), model.state_dict().values(), strict=True):
            if a.dtype.is_floating_point:
                a.lerp_(m, 1 - decay)
            else:
                a.copy_(m)


def _batches(labels: torch.Tensor, cfg: TrainConfig, task: Task, gen: torch.Generator) -> list[torch.Tensor]:
    n = labels.shape[0]
    if cfg.balanced:
        if task == MULTI_LABEL:
            raise ConfigError("balanced sampling needs single-label classes; it is not defined for multi-label")
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1).double()
        weights = (1.0 / counts.clamp_min(1))[labels]
        order = torch.multinomial(weights, n, replacement=True, generator=gen)
    else:
        order = torch.randperm(n, generator=gen)
    return list(order.split(cfg.batch_size))


def build_classifier(dataset: Dataset, cfg: TrainConfig, train: Split | None = None) -> Classifier:
    """A fresh classifier for ``dataset`` with normalisation fitted on (a sample of) the split it
    will be trained on (default: the dataset's train split)."""
    train = train if train is not None else dataset.split("train")
    sample = np.random.default_rng(cfg.seed).choice(len(train), size=min(len(train), 5000), replace=False)
    x, _ = train.get(np.sort(sample))
    mean, std = channel_stats(x)
    info = dataset.info
    c, h, w = train.image_shape
    size = cfg.input_size or (DEFAULT_SIZE if min(h, w) < min_size(cfg.arch) else None)
    network_input = (c, size, size) if size is not None and (size, size) != (h, w) else None
    kwargs = dict(cfg.arch_kwargs)
    if cfg.arch in NEEDS_SIZE:
        if h != w and size is None:
            raise ConfigError(f"{cfg.arch} needs square inputs; give an input size to resize {h}x{w} images")
        kwargs.setdefault("img_size", size or h)
    meta = ModelMeta(task=info.task, class_names=info.class_names, input_shape=train.image_shape,
                     mean=tuple(mean), std=tuple(std), num_outputs=info.num_classes,
                     critical_classes=info.critical_classes, arch=cfg.arch, arch_kwargs=kwargs,
                     dataset=info.name, network_input=network_input)
    torch.manual_seed(cfg.seed)
    network = build(cfg.arch, in_channels=c, num_outputs=meta.num_outputs, **kwargs)
    return Classifier(network, meta)


def fit(dataset: Dataset, cfg: TrainConfig, *, device: torch.device | str = "cpu",
        on_epoch: Callable[[dict[str, float]], None] | None = None,
        train_split: Split | None = None, objective: Objective | None = None, team: Team | None = None
        ) -> TrainResult:
    """Train on ``train_split`` (default: the dataset's train split), select on ``val``, report ``test``.

    ``train_split`` lets other threat code (poisoning, adversarial training) reuse this
    loop on a modified training set; ``objective`` replaces the plain loss (defences);
    ``team``: this process is one member of a data-parallel run (see :class:`Team`).
    """
    start = time.perf_counter()
    gen = seed_everything(cfg.seed)
    train = train_split if train_split is not None else dataset.split("train")
    val = dataset.split("val")
    model = build_classifier(dataset, cfg, train).to(device)
    aug_gen = _member_streams(cfg, team, gen)
    aug = _augment_for(cfg, model, dataset.info.name)
    epochs = cfg.epochs or auto_epochs(len(train))
    opt, sched, total_steps = _optimiser(model, cfg, len(train), epochs)
    # the weight average (Polyak & Juditsky 1992; "EMA" in timm): validated and kept in place of
    # the last weights when on; its decay ramps up over the first steps, as in timm's ModelEma
    average = copy.deepcopy(model) if cfg.ema_decay > 0 else model
    best: tuple[float, float] = (-1.0, math.inf)
    best_state, best_epoch, stale = copy.deepcopy(model.state_dict()), 0, 0
    step = 0
    history: list[dict[str, float]] = []
    bar = progress(total=total_steps, desc=f"train {cfg.arch} on {dataset.info.name}", unit="step")
    for epoch in range(1, epochs + 1):
        train_loss, step = _one_epoch(model, average, train, cfg, aug, objective, opt, sched, (gen, aug_gen), device,
                                      step, bar, team)
        row = _validate(average, val, objective, epoch, train_loss, start, team)
        history.append(row)
        if on_epoch:
            on_epoch(row)
        selected_on, score = selection_score(row)
        key = (score, -row["val_loss"])
        if key > (best[0], -best[1]):
            best, best_state, best_epoch, stale = (key[0], -key[1]), copy.deepcopy(average.state_dict()), epoch, 0
        else:
            stale += 1
        if stale >= cfg.patience:
            log.info("early stop after epoch %d (best epoch %d)", epoch, best_epoch)
            break
        # a team stops on member 0's clock, so that every member stops after the same epoch
        elapsed = row["elapsed_s"] if team is not None else time.perf_counter() - start
        if cfg.time_limit_s is not None and elapsed > cfg.time_limit_s:
            log.info("time limit reached after epoch %d", epoch)
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    val_best = evaluate(model, val)
    test = evaluate(model, dataset.split("test")) if "test" in dataset.splits else None
    wall = time.perf_counter() - start
    record = _record(dataset, cfg, objective, epochs, aug, best_epoch, selected_on, history, val_best, test, wall)
    if team is not None:
        record["data_parallel"] = team.describe()
    return TrainResult(model, history, best_epoch, val_best, test, wall, record)


def _member_streams(cfg: TrainConfig, team: Team | None, gen: torch.Generator) -> torch.Generator:
    """The augmentation's generator. One process: the seeded generator that also draws the batch
    order, as it always has. A team member: its own (the order is drawn identically everywhere
    from ``gen``), and, once the shared initial weights are built, its own global stream (dropout)."""
    if team is None:
        return gen
    torch.manual_seed(cfg.seed * 1_000_003 + team.rank + 1)
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + team.rank + 1)


def _validate(average: Classifier, val: Split, objective: Objective | None, epoch: int, train_loss: float,
              start: float, team: Team | None) -> dict[str, float]:
    """One epoch's validation row: computed by member 0 of a team (after the members' BatchNorm
    statistics are averaged) and shared, so that every member selects and stops alike."""
    if team is not None:
        team.average_buffers(average)
        if team.rank != 0:
            return team.share({})
    val_metrics = evaluate(average, val)
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_metrics["loss"],
           "val_accuracy": val_metrics["accuracy"], "val_auc": val_metrics["auc"],
           "elapsed_s": time.perf_counter() - start}
    if objective:
        average.eval()
        row.update(objective.validate(average, val))
        row["elapsed_s"] = time.perf_counter() - start
    return team.share(row) if team is not None else row


def _augment_for(cfg: TrainConfig, model: Classifier, dataset: str) -> str:
    """The augmentation parts the run uses, refused where they cannot apply."""
    aug = resolve_augment(cfg.augment, model.meta.input_shape[0], cfg.arch)
    if "stain" in aug.split("+") and model.meta.input_shape[0] != 3:
        channels = model.meta.input_shape[0]
        raise ConfigError(f"augment stain: H&E stain jitter needs RGB images; {dataset} has {channels} "
                          f"channel{'s' if channels != 1 else ''} (use flip, dihedral or shift)")
    return aug


class _Ticks(Protocol):
    """A progress bar, as far as training uses one."""

    def update(self, n: int = 1) -> object: ...


def _optimiser(model: Classifier, cfg: TrainConfig, n_train: int, epochs: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, int]:
    """AdamW with half an epoch of linear warm-up, then a cosine decay to zero over the run."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.rate, weight_decay=cfg.decay)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = epochs * steps_per_epoch
    warmup = max(1, steps_per_epoch // 2)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total_steps))))
    return opt, sched, total_steps


def _one_epoch(model: Classifier, average: Classifier, train: Split, cfg: TrainConfig, aug: str,
               objective: Objective | None, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
               gens: tuple[torch.Generator, torch.Generator], device: torch.device | str, step: int, bar: _Ticks,
               team: Team | None) -> tuple[float, int]:
    """One pass over the training split; returns the mean training loss (over this member's
    images, for a team) and the step count. ``gens``: the batch order's generator and the
    augmentation's (the same one outside a team)."""
    model.train()
    running, seen = 0.0, 0
    order, aug_gen = gens
    params = [p for p in model.parameters() if p.requires_grad]
    for batch in _batches(train.labels, cfg, model.task, order):
        idx = batch if team is None else batch[team.rank::team.size]
        if len(idx):
            x, y = train.get(idx)
            x, y = augment(x.to(device), aug, aug_gen), y.to(device)
            loss = objective.loss(model, x, y) if objective else loss_fn(model(x), y, model.task)
            opt.zero_grad(set_to_none=team is None)
            loss.backward()
            running += loss.item() * len(idx)
            seen += len(idx)
        else:  # a batch smaller than the team: this member adds nothing to the average
            opt.zero_grad(set_to_none=False)
        if team is not None:
            team.average_gradients(params, len(idx), len(batch))
        opt.step()
        sched.step()
        step += 1
        if average is not model:
            _average_into(average, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
        bar.update(1)
    return (running / seen if team is None else running / max(1, seen)), step


def _record(dataset: Dataset, cfg: TrainConfig, objective: Objective | None, epochs: int, aug: str, best_epoch: int,
            selected_on: str, history: list[dict[str, float]], val_best: dict[str, Any], test: dict[str, Any] | None,
            wall: float) -> dict[str, Any]:
    """What the checkpoint and metrics.json record about the training run."""
    return {
        "dataset": dataset.info.name, "dataset_source": dataset.info.source,
        "dataset_notes": list(dataset.info.notes),
        "train_config": asdict(cfg), "objective": objective.describe() if objective else None,
        "epochs": epochs, "augment": aug, "lr": cfg.rate, "weight_decay": cfg.decay, "ema": cfg.ema_decay,
        "best_epoch": best_epoch, "selected_on": selected_on,
        "epochs_run": len(history),
        "metrics": {"val": val_best, "test": test}, "history": history, "train_wall_s": wall,
        "seed": cfg.seed, "environment": environment(),
    }
