"""The attack interface: one registry, one config style, one result type.

Every attack is a class registered with :func:`register_attack`, holding a frozen,
keyword-only config dataclass validated on construction. Calling it with a model, a batch in
[0, 1], labels, an optional target and a generator returns an :class:`AttackResult`. The
base class does the shared work once: input checks, target resolution, the task-aware goal,
counting, timing, and the final success check recomputed from the model's predictions.
Subclasses write one method, :meth:`Attack.run`.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch

from medfool.attacks.goal import Goal, two_logits
from medfool.attacks.norms import l0, l2, linf
from medfool.attacks.passes import Passes
from medfool.data.dataset import DatasetInfo
from medfool.models.classifier import Classifier, logits_to_labels
from medfool.models.predict import PredictModel
from medfool.utils.rng import ImageStreams, as_ids
from medfool.vocab import MULTI_LABEL, NORMS, TASKS, AttackKind, BudgetKind, Loss, MeasuredNorm, Norm, Task

__all__ = [
    "PER_IMAGE_EXTRAS", "Attack", "AttackConfig", "AttackResult", "Counter", "TargetSpec", "Victim",
    "attack_class", "attack_names", "check_choice", "check_inputs", "check_int", "check_norm_eps",
    "check_range", "evaluating", "get_attack", "loss_and_grad", "register_attack", "resolve_attack_labels",
    "resolve_target", "run_seed",
]

log = logging.getLogger(__name__)

TargetSpec = None | int | str | torch.Tensor

Victim = Classifier | PredictModel
"""A model under attack: our :class:`Classifier` (gradients available), or a predict-only view
of a model (:class:`medfool.models.predict.PredictModel`) for query attacks."""


# -- configs ------------------------------------------------------------------------------------
def check_range(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> None:
    """'eps must be in [0, 1], got 3.0' style validation for config fields."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    bad = value <= lo if lo_open else value < lo
    if bad or value > hi:
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value:g}")


def check_int(name: str, value: int, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_norm_eps(norm: Norm, eps: float) -> None:
    """The Lp ball of a budgeted attack: Linf radius within the [0, 1] pixel range, L2 any size."""
    check_choice("norm", norm, NORMS)
    check_range("eps", eps, 0.0, 1.0 if norm == "linf" else 1e4)


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """Base for attack configs: frozen, keyword-only, validated in ``validate``."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for any out-of-range field."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- results ------------------------------------------------------------------------------------
# extras that hold one row per image (joined by AttackResult.concat)
PER_IMAGE_EXTRAS = frozenset({"broken_by", "transform_success", "parameters", "mask", "candidate", "delta_e",
                              "generations", "front", "front_candidates", "refused"})

@dataclass
class AttackResult:
    """What one attack call produced, per sample where it can be.

    Shape: x_adv (N, C, H, W) in [0, 1]; success, clean_correct (N,) bool; norms, gradients,
    queries (N,). ``success`` is recomputed from the model's predictions on ``x_adv``.
    """

    attack: str
    x_adv: torch.Tensor
    success: torch.Tensor
    clean_correct: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    gradients: torch.Tensor
    queries: torch.Tensor
    wall_s: float
    config: dict[str, Any]
    target: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def concat(cls, parts: list[AttackResult]) -> AttackResult:
        """Join the results of consecutive batches of one attack run."""
        if not parts:
            raise ValueError("concat needs at least one result")
        first = parts[0]
        per_sample: dict[str, Any] = {
            f: torch.cat([getattr(p, f) for p in parts])
            for f in ("x_adv", "success", "clean_correct", "clean_pred", "adv_pred", "l0", "l2", "linf",
                      "gradients", "queries")}
        target = torch.cat([p.target for p in parts if p.target is not None]) if first.target is not None else None
        extras: dict[str, Any] = {}
        for key, value in first.extras.items():
            # per-image extras are joined; the others (a universal perturbation, a patch, a
            # training history) describe the first part's run and are kept as they are
            values = [p.extras.get(key) for p in parts]
            joined = key in PER_IMAGE_EXTRAS and all(isinstance(v, torch.Tensor) for v in values)
            extras[key] = torch.cat(values) if joined else value  # type: ignore[arg-type]
        return cls(attack=first.attack, wall_s=sum(p.wall_s for p in parts), config=first.config, target=target,
                   extras=extras, **per_sample)

    @classmethod
    def from_scores(cls, attack: str, config: dict[str, Any], task: Task, x: torch.Tensor, x_adv: torch.Tensor,
                    y: torch.Tensor, clean: torch.Tensor, adv: torch.Tensor, *, gradients: torch.Tensor,
                    queries: torch.Tensor, wall_s: float, target: torch.Tensor | None = None,
                    label_mask: torch.Tensor | None = None, extras: dict[str, Any] | None = None) -> AttackResult:
        """The one way a result is built: from the model's scores on the clean and the returned
        batch (logits, or a predict-only model's pseudo-logits). Success and correctness are
        the :class:`Goal`'s (a multi-label image is correct when every label is, fooled when any
        chosen label flips); norms are measured on ``x_adv - x``."""
        goal, truth = Goal(task, y, target, label_mask), Goal(task, y, None, label_mask)
        delta = x_adv - x
        # a served model refuses a query with a NaN row: no answer is neither correct nor fooled
        answered_clean, answered_adv = torch.isfinite(clean).all(1), torch.isfinite(adv).all(1)
        return cls(
            attack=attack, x_adv=x_adv, success=goal.success(adv) & answered_adv,
            clean_correct=~truth.success(clean) & answered_clean,
            clean_pred=logits_to_labels(clean, task), adv_pred=logits_to_labels(adv, task), l0=l0(delta),
            l2=l2(delta), linf=linf(delta), gradients=gradients, queries=queries, wall_s=wall_s, config=config,
            target=target, extras=extras if extras is not None else {})

    @classmethod
    def measure(cls, attack: str, config: dict[str, Any], model: Classifier, x: torch.Tensor, x_adv: torch.Tensor,
                y: torch.Tensor, *, target: int | None = None, wall_s: float = 0.0, gradients: int = 0,
                queries: int = 2, extras: dict[str, Any] | None = None) -> AttackResult:
        """A result for a batch perturbed by something crafted elsewhere (a universal
        perturbation or patch applied to held-out images, a natural corruption): the model is
        asked about both batches, then :meth:`from_scores`."""
        with torch.no_grad():
            clean, adv = model(x), model(x_adv)
        ones = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        return cls.from_scores(attack, {"attack": attack, **config}, model.task, x, x_adv, y, clean, adv,
                               gradients=gradients * ones, queries=queries * ones, wall_s=wall_s,
                               target=None if target is None else torch.full_like(y, target), extras=extras or {})

    @classmethod
    def worst_of(cls, results: list[AttackResult]) -> AttackResult:
        """Per image, the first of several attackers' results (on the same images, judged by the
        same deployed model) that fooled it, else the first result's; counts and time add up.
        The headline of a defended model is this per-image worst case over its attackers."""
        if not results:
            raise ValueError("worst_of needs at least one result")
        out = results[0]
        picked = {f: getattr(out, f).clone() for f in ("x_adv", "success", "adv_pred", "l0", "l2", "linf")}
        won = out.success & out.clean_correct
        for r in results[1:]:
            take = r.success & r.clean_correct & ~won
            for f, value in picked.items():
                value[take] = getattr(r, f)[take]
            won = won | take
        return cls(attack=out.attack, clean_correct=out.clean_correct, clean_pred=out.clean_pred,
                   gradients=sum((r.gradients for r in results[1:]), out.gradients.clone()),
                   queries=sum((r.queries for r in results[1:]), out.queries.clone()),
                   wall_s=sum(r.wall_s for r in results), config=out.config, target=out.target,
                   extras=out.extras, **picked)

    @property
    def success_rate(self) -> float:
        """Attack success rate over the images the model classified correctly before."""
        n = int(self.clean_correct.sum())
        return float((self.success & self.clean_correct).sum()) / n if n else math.nan

    @property
    def robust_accuracy(self) -> float:
        """Fraction of *all* images still correctly classified after the attack."""
        return float((self.clean_correct & ~self.success).float().mean())

    def summary(self) -> dict[str, Any]:
        ok = self.success & self.clean_correct

        def med(t: torch.Tensor) -> float:  # median over images that were right and got fooled
            return float(t[ok].float().median()) if bool(ok.any()) else math.nan

        return {
            "attack": self.attack, "n": int(self.x_adv.shape[0]), "clean_correct": int(self.clean_correct.sum()),
            "success_rate": self.success_rate, "robust_accuracy": self.robust_accuracy,
            "median_l2": med(self.l2), "median_linf": med(self.linf), "median_l0": med(self.l0),
            "mean_gradients": float(self.gradients.float().mean()), "mean_queries": float(self.queries.float().mean()),
            "wall_s": self.wall_s, "config": self.config,
        }


class Counter:
    """Per-call bookkeeping: gradient and forward evaluations per sample, and any extra
    outputs an attack wants in its result (e.g. the universal perturbation)."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.gradients = torch.zeros(n, dtype=torch.int64, device=device)
        self.queries = torch.zeros(n, dtype=torch.int64, device=device)
        self.extras: dict[str, Any] = {}

    def count(self, idx: torch.Tensor | None, *, gradients: int = 0, queries: int = 0) -> None:
        if idx is None:
            self.gradients += gradients
            self.queries += queries
        else:  # index_add_: an image named twice in idx is counted twice
            ones = torch.ones(idx.numel(), dtype=torch.int64, device=self.gradients.device)
            self.gradients.index_add_(0, idx.to(self.gradients.device), ones * gradients)
            self.queries.index_add_(0, idx.to(self.queries.device), ones * queries)


    def absorb(self, idx: torch.Tensor, other: Counter) -> None:
        """Add the counts of a sub-run whose row j was image ``idx[j]`` of this batch."""
        self.gradients.index_add_(0, idx.to(self.gradients.device), other.gradients)
        self.queries.index_add_(0, idx.to(self.queries.device), other.queries)


# -- registry -----------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    if cls.name in _REGISTRY:
        raise ValueError(f"attack {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def attack_names() -> list[str]:
    return sorted(_REGISTRY)


def attack_class(name: str) -> type[Attack]:
    key = name.lower().replace("_", "-")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown attack {name!r}{hint} (known: {', '.join(attack_names())})")
    return _REGISTRY[key]


def get_attack(name: str, **config: Any) -> Attack:
    cls = attack_class(name)
    known = {f.name for f in fields(cls.Config)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"{cls.name} has no option {', '.join(sorted(unknown))} (options: {', '.join(sorted(known))})")
    return cls(cls.Config(**config))


# -- the base class -----------------------------------------------------------------------------
def loss_and_grad(model: Classifier, x: torch.Tensor, goal: Goal, idx: torch.Tensor | None,
                  kind: Loss = "ce") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward+backward on a (sub)batch: logits, per-sample loss and its input gradient."""
    xa = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xa)
        loss = goal.loss(logits, idx, kind)
        (grad,) = torch.autograd.grad(loss.sum(), xa)
    return logits.detach(), loss.detach(), grad


class Attack(ABC):
    """Base class. Subclasses set ``name``, ``Config``, ``norm`` and implement ``run``."""

    name: ClassVar[str]
    Config: ClassVar[type[AttackConfig]]
    fixed_norm: ClassVar[MeasuredNorm | None] = None  # for attacks whose config has no norm (C&W: "l2")
    tasks: ClassVar[frozenset[Task]] = frozenset(TASKS)
    targeted_ok: ClassVar[bool] = True
    paper: ClassVar[str] = ""
    kind: ClassVar[AttackKind] = "per-image"
    """"per-image": every image gets its own perturbation (call the attack on the images);
    "universal": one perturbation or patch is crafted on some images and applied unchanged to
    others (:meth:`craft_and_apply`)."""
    budget_kind: ClassVar[BudgetKind] = "norm"  # "norm": an Lp ball (eps); "area": the share of the image covered
    queries_only: ClassVar[bool] = False  # True: sees only the model's answers (black-box)

    def __init__(self, config: AttackConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise TypeError("pass either a config or keyword options, not both")
        cfg = config if config is not None else self.Config(**kwargs)
        if not isinstance(cfg, self.Config):
            raise TypeError(f"{self.name} needs a {self.Config.__name__}, got {type(cfg).__name__}")
        self.config = cfg

    @property
    def norm(self) -> MeasuredNorm | None:
        """"linf", "l2", "l0", or None when the budget is not an Lp ball."""
        configured = getattr(self.config, "norm", None)
        return configured if configured is not None else self.fixed_norm

    def budget(self) -> float | None:
        """The norm budget the output must respect (checked by the contract test)."""
        eps = getattr(self.config, "eps", None)
        return float(eps) if eps is not None else None

    def max_passes(self, task: Task, classes: int) -> Passes | None:
        """The most model passes one image can cost on a ``task`` model with ``classes`` classes
        (2 for a one-logit binary model), the clean and the final forward included; None where it
        cannot be known in advance. An audit's time estimate is built from these."""
        return None

    @abstractmethod
    def run(self, model: Classifier, x: torch.Tensor, goal: Goal, rng: ImageStreams,
            counter: Counter) -> torch.Tensor:
        """Return the adversarial batch (N, C, H, W) in [0, 1]. Must not modify ``x``. Per-image
        randomness comes from ``rng.rows(idx)``; batch-level randomness (universal attacks)
        from ``rng.generator``."""

    def craft_and_apply(self, model: Classifier, craft_x: torch.Tensor, craft_y: torch.Tensor, x: torch.Tensor,
                        y: torch.Tensor, *, seed: int, target: int | None = None) -> AttackResult:
        """Universal attacks: craft on (craft_x, craft_y), measure on the held-out (x, y)."""
        raise TypeError(f"{self.name} is a per-image attack: call it on the images")

    # -- the template ------------------------------------------------------------------------
    def victim(self, model: Victim) -> Victim:
        """What the attack sees of ``model``: the model itself, gradients included. Query-only
        attacks override this with the predict-only view."""
        if not isinstance(model, Classifier):
            raise TypeError(f"{self.name} needs the model's gradients (a Classifier), got {type(model).__name__}")
        return model

    def clean_scores(self, victim: Victim, x: torch.Tensor, counter: Counter,
                     clean_logits: torch.Tensor | None) -> torch.Tensor:
        """The model's scores on the clean batch (one query per image, unless the caller
        already has the logits)."""
        assert isinstance(victim, Classifier)
        if clean_logits is None:
            with torch.no_grad():
                clean_logits = victim(x)
            counter.count(None, queries=1)
        elif clean_logits.shape[0] != x.shape[0] or clean_logits.shape[1] != victim.meta.num_outputs:
            raise ValueError(f"clean_logits must have shape ({x.shape[0]}, {victim.meta.num_outputs}), "
                             f"got {tuple(clean_logits.shape)}")
        return clean_logits

    def solve(self, victim: Victim, x: torch.Tensor, goal: Goal, rng: ImageStreams, counter: Counter,
              clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The adversarial batch and the model's scores on it: :meth:`run`, then one forward."""
        assert isinstance(victim, Classifier)
        x_adv = self.run(victim, x, goal, rng, counter).detach().clamp(0.0, 1.0)
        with torch.no_grad():
            return x_adv, victim(x_adv)

    def __call__(self, model: Victim, x: torch.Tensor, y: torch.Tensor, *, target: TargetSpec = None,
                 generator: torch.Generator | None = None, seed: int | None = None,
                 attack_labels: list[int] | None = None, clean_logits: torch.Tensor | None = None,
                 ids: torch.Tensor | list[int] | range | None = None) -> AttackResult:
        """Attack the batch. ``ids`` name the images (their dataset indices; default 0..N-1):
        each image draws its randomness from its own stream keyed by ``(seed, id)``, so its
        result is the same alone or in any batch. The seed is ``seed``, else one number drawn
        from ``generator``, else 0. ``clean_logits`` (the model's logits on ``x``), when the
        caller already has them (an audit running many attacks on the same images), saves a
        forward."""
        victim = self.victim(model)
        check_inputs(victim, x, y)
        if victim.task not in self.tasks:
            raise ValueError(f"{self.name} does not support {victim.task} models "
                             f"(supported: {', '.join(sorted(self.tasks))})")
        rng = ImageStreams(run_seed(seed, generator), as_ids(ids, x.shape[0]), x.device)
        with evaluating(model):
            start = time.perf_counter()
            counter = Counter(x.shape[0], x.device)
            clean = self.clean_scores(victim, x, counter, clean_logits)
            tgt = resolve_target(victim, clean, y, target)
            if tgt is not None and not self.targeted_ok:
                raise ValueError(f"{self.name} is untargeted only")
            labels_idx = resolve_attack_labels(victim, attack_labels)
            goal = Goal(victim.task, y, tgt, labels_idx)
            x_adv, adv_scores = self.solve(victim, x, goal, rng, counter, clean)
        return AttackResult.from_scores(
            self.name, {"attack": self.name, **self.config.to_json()}, victim.task, x, x_adv, y, clean, adv_scores,
            gradients=counter.gradients, queries=counter.queries, wall_s=time.perf_counter() - start, target=tgt,
            label_mask=labels_idx, extras=counter.extras)


@contextlib.contextmanager
def evaluating(model: Victim) -> Iterator[None]:
    """Eval mode and padded small batches for the duration of an attack (our own models; a
    predict-only model is whatever it is), the training flag restored afterwards."""
    if not isinstance(model, Classifier):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        with model.padded():
            yield
    finally:
        model.train(was_training)


def run_seed(seed: int | None, generator: torch.Generator | None) -> int:
    """The integer seed of a run: ``seed``, else one draw from ``generator``, else 0."""
    if seed is not None:
        return int(seed)
    if generator is not None:
        return int(torch.randint(0, 2**62, (1,), generator=generator))
    return 0


def resolve_attack_labels(model: Victim, attack_labels: list[int] | None) -> torch.Tensor | None:
    if attack_labels is None:
        return None
    if model.task != MULTI_LABEL:
        raise ValueError("attack_labels is for multi-label models; use target for single-label models")
    bad = [i for i in attack_labels if not 0 <= i < model.num_classes]
    if bad or not attack_labels:
        raise ValueError(f"attack_labels must be label indices in [0, {model.num_classes - 1}], got {attack_labels}")
    return torch.tensor(sorted(set(attack_labels)), device=model.device)


# -- checks -------------------------------------------------------------------------------------
def check_inputs(model: Victim, x: torch.Tensor, y: torch.Tensor) -> None:
    """One check at the public entry: rank, dtype, shape, finiteness, range, labels, device."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a float tensor in [0, 1], got dtype {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}")
    if tuple(x.shape[1:]) != tuple(model.meta.input_shape):
        raise ValueError(f"x must have images of shape {tuple(model.meta.input_shape)}, got {tuple(x.shape[1:])}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image, got an empty batch")
    if x.device != model.device:
        raise ValueError(f"x must be on the model's device {model.device}, got {x.device}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite, got NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"x must be in [0, 1] (pixel space; normalisation belongs in the model), "
                         f"got values in [{lo:.3g}, {hi:.3g}]")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"y must be integer labels, got dtype {y.dtype}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have one label per image ({x.shape[0]}), got {y.shape[0]}")
    y = y.long()
    if model.task == MULTI_LABEL:
        if y.dim() != 2 or y.shape[1] != model.num_classes or not bool(((y == 0) | (y == 1)).all()):
            raise ValueError(f"y must be (N, {model.num_classes}) of 0/1 for a multi-label model, got "
                             f"shape {tuple(y.shape)}")
    else:
        if y.dim() != 1:
            raise ValueError(f"y must have shape (N,), got {tuple(y.shape)}")
        if bool((y < 0).any()) or bool((y >= model.num_classes).any()):
            raise ValueError(f"y must be in [0, {model.num_classes - 1}], got values in "
                             f"[{int(y.min())}, {int(y.max())}]")


def resolve_target(model: Victim, clean_logits: torch.Tensor, y: torch.Tensor,
                   target: TargetSpec) -> torch.Tensor | None:
    """None (untargeted); a class index or name; 'least-likely'; or a per-sample tensor."""
    if target is None:
        return None
    n = y.shape[0]
    if model.task == MULTI_LABEL:
        if not isinstance(target, torch.Tensor) or target.shape != y.shape:
            raise ValueError(f"target for a multi-label model must be a 0/1 tensor of shape {tuple(y.shape)}")
        return target.long().to(y.device)
    if isinstance(target, str):
        if target in ("least-likely", "least_likely", "ll"):
            # the least likely class other than the true one
            t = two_logits(clean_logits).scatter(1, y.long()[:, None], float("inf")).argmin(dim=1)
        else:
            info = DatasetInfo(name=model.meta.dataset or "model", task=model.task, class_names=model.class_names,
                               n_channels=model.meta.input_shape[0], image_size=model.meta.input_shape[1:])
            t = torch.full((n,), info.class_index(target), dtype=torch.long, device=y.device)
    elif isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long, device=y.device)
    elif isinstance(target, torch.Tensor):
        t = target.long().to(y.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n).clone()
        if t.shape[0] != n:
            raise ValueError(f"target must have one class per image ({n}), got {t.shape[0]}")
    else:
        raise TypeError(f"target must be None, an int, a class name, 'least-likely' or a tensor, got {target!r}")
    if bool((t < 0).any()) or bool((t >= model.num_classes).any()):
        raise ValueError(f"target must be in [0, {model.num_classes - 1}], "
                         f"got values in [{int(t.min())}, {int(t.max())}]")
    same = int((t == y.long()).sum())
    if same:
        raise ValueError(f"target must differ from the true label, got target == label for {same} image(s); "
                         "attack only images of other classes")
    return t
