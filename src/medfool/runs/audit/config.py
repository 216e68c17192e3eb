"""The audit's typed configuration, read from TOML.

Every section is a frozen dataclass; a key that is not a field is an error (a typo must not
silently fall back to a default), and every value is type- and range-checked before any work
starts. Epsilons are written in units of 1/255 (``eps = [1, 2, 4, 8]`` means 1/255 ... 8/255).

Example (every key optional)::

    seed = 0
    n = 64                      # test images attacked
    [whitebox]
    attacks = ["fgsm", "pgd"]   # the naive attacker: budgeted Linf attacks, each at every eps
    ensemble = "fast"           # the headline: AutoAttack's members (fast | standard: its own budgets | off)
    eps = [1, 2, 4, 8]
    [corruptions]
    severities = [1, 2, 3, 4, 5]
    [onepixel]
    pixels = [1, 3]
    [defence]
    names = ["jpeg", "median:size=3", "runs/adv/model.safetensors"]  # or medfool audit --defence NAME
    eps = [2, 8]
"""

from __future__ import annotations

import json
import sys
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from medfool.attacks.poisoning.triggers import KINDS
from medfool.errors import ConfigError
from medfool.eval.corruptions import SEVERITIES, known_names
from medfool.models.preprocess import PREPROCESS, parse_spec
from medfool.runs.poisoning import DETECTORS
from medfool.vocab import ENSEMBLE_CHOICES, PRESET_NAMES, SPLITS, EnsembleChoice, Preset, SplitName

__all__ = [
    "BUDGETED",
    "ENSEMBLE",
    "MAX_SEED",
    "MINIMAL",
    "AuditConfig",
    "BackdoorSection",
    "BlackboxConfig",
    "CorruptionsConfig",
    "DefenceSection",
    "MapsConfig",
    "OnePixelConfig",
    "PatchConfig",
    "WhiteboxConfig",
    "config_from_dict",
    "load_config",
]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_SEED = 2**32 - 1  # NumPy's seeds are 32-bit
BUDGETED = ("fgsm", "pgd", "bim", "apgd-ce", "apgd-dlr")
MINIMAL = ("deepfool", "cw")
ENSEMBLE = ENSEMBLE_CHOICES


@dataclass(frozen=True)
class WhiteboxConfig:
    """Gradient attacks with full model access: the robust-accuracy-vs-epsilon curve.

    ``attacks`` are the naive attacker (FGSM and PGD-10 with cross-entropy saturate on
    over-confident models and overstate robustness); ``ensemble`` is the headline, the worst
    case per image over APGD-CE, APGD-T, FAB-T and Square (medfool.attacks.ensemble).
    """

    enabled: bool = True
    attacks: tuple[str, ...] = ("fgsm", "pgd")
    # fast: within a point of torchattacks' AutoAttack at a tenth to half of its time;
    # standard: AutoAttack's own budgets (100 steps, 9 targets), about its 100-step time; off
    ensemble: EnsembleChoice = "fast"
    eps: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)  # in 1/255
    steps: int = 10
    minimal: tuple[str, ...] = ("deepfool",)  # minimal-perturbation attacks: how small can a flip be

    def check(self) -> None:
        if self.ensemble not in ENSEMBLE:
            raise ConfigError(f"whitebox.ensemble must be one of {', '.join(ENSEMBLE)}, got {self.ensemble!r}")
        _one_of("whitebox.attacks", self.attacks, BUDGETED)
        _one_of("whitebox.minimal", self.minimal, MINIMAL)
        _eps_list("whitebox.eps", self.eps)
        _at_least("whitebox.steps", self.steps, 1)


@dataclass(frozen=True)
class CorruptionsConfig:
    """Natural variation: accuracy under graded corruptions of the modality (after MedMNIST-C)."""

    enabled: bool = True
    kinds: tuple[str, ...] = ()  # empty: the modality's set (histology for RGB, X-ray for grayscale)
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)

    def check(self) -> None:
        _one_of("corruptions.kinds", self.kinds, known_names(), what="corruption")
        if not self.severities or list(self.severities) != sorted(set(self.severities)) or any(
                s not in SEVERITIES for s in self.severities):
            raise ConfigError(f"corruptions.severities must be increasing values from 1 to 5, got "
                              f"{list(self.severities)}")


@dataclass(frozen=True)
class BlackboxConfig:
    """Query-only attacks at the white-box budgets (also the gradient-masking check)."""

    enabled: bool = True
    attacks: tuple[str, ...] = ("square",)  # square (score-based search) and/or noise (random corners)
    queries: int = 300  # per image

    def check(self) -> None:
        _one_of("blackbox.attacks", self.attacks, ("square", "noise"))
        _at_least("blackbox.queries", self.queries, 2)


@dataclass(frozen=True)
class PatchConfig:
    """One universal patch crafted on training tiles, pasted on the audited test tiles."""

    enabled: bool = True
    area: float = 0.1  # fraction of the image the patch may cover
    target: str = "auto"  # a class name; auto = a benign / normal class
    steps: int = 200
    n_craft: int = 256

    def check(self) -> None:
        if not 0 < self.area <= 0.5:
            raise ConfigError(f"patch.area must be in (0, 0.5] (a fraction of the image), got {self.area:g}")
        _at_least("patch.steps", self.steps, 1)
        _at_least("patch.n_craft", self.n_craft, 1)


@dataclass(frozen=True)
class OnePixelConfig:
    """Differential evolution over k pixels (Su et al.), a small budget per image."""

    enabled: bool = True
    pixels: tuple[int, ...] = (1, 3)
    n: int = 32  # at most this many of the audited images (a seeded random subset): DE is the costly stage
    population: int = 100
    generations: int = 20

    def check(self) -> None:
        if not self.pixels or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.pixels):
            raise ConfigError(f"onepixel.pixels must be a list of integers >= 1, got {list(self.pixels)}")
        _at_least("onepixel.n", self.n, 1)
        _at_least("onepixel.population", self.population, 4)
        _at_least("onepixel.generations", self.generations, 1)


@dataclass(frozen=True)
class MapsConfig:
    """Single-pixel vulnerability maps for a few tiles: every pixel, or a grid on large images."""

    enabled: bool = True
    n: int = 2
    samples: int = 8  # random colours tried per pixel, besides the colour cube's corners
    stride: int = 0  # test every stride-th row and column; 0: every pixel up to 64 px a side, then ~64 a side

    def check(self) -> None:
        _at_least("maps.n", self.n, 1)
        _at_least("maps.samples", self.samples, 0)
        _at_least("maps.stride", self.stride, 0)


@dataclass(frozen=True)
class BackdoorSection:
    """Backdoor retraining, off unless asked: poison the training set, retrain, detect."""

    enabled: bool = False
    trigger: str = "patch"  # patch, blend, stain or pen
    rate: float = 0.05  # share of the training set poisoned (exactly round(rate x N) images)
    target: str = "auto"  # a class name; auto = a benign / normal class
    detectors: tuple[str, ...] = ("activation-clustering", "spectral-signatures", "strip", "neural-cleanse")
    retrain: bool = True  # retrain without what each training-set detector flagged
    epochs: int = 0  # per model; 0 = as medfool train chooses

    def check(self) -> None:

        if self.trigger not in KINDS:
            raise ConfigError(f"backdoor.trigger must be one of {', '.join(KINDS)}, got {self.trigger!r}")
        if not 0 < self.rate < 1:
            raise ConfigError(f"backdoor.rate must be a fraction in (0, 1), got {self.rate:g}")
        for d in self.detectors:
            if d not in DETECTORS:
                raise ConfigError(f"backdoor.detectors: unknown detector {d!r} (known: {', '.join(DETECTORS)})")
        _at_least("backdoor.epochs", self.epochs, 0)


@dataclass(frozen=True)
class DefenceSection:
    """Defences measured against the naive and the adaptive attacker, beside the audited model."""

    # input transforms applied to the audited model (jpeg, median:size=3, ...) or paths to defended
    # checkpoints (adversarially trained, ensembles); a defended audited model is always measured
    names: tuple[str, ...] = ()
    eps: tuple[float, ...] = (2.0, 8.0)  # in 1/255
    eot: int = 8                         # EOT draws per step for random defences
    preset: Preset = "fast"              # the adaptive attacker's ensemble preset

    def check(self) -> None:
        _eps_list("defence.eps", self.eps)
        _at_least("defence.eot", self.eot, 1)
        if self.preset not in PRESET_NAMES:
            raise ConfigError(f"defence.preset must be fast or standard, got {self.preset!r}")
        for name in self.names:
            if name.endswith((".safetensors", ".pt", ".pth", ".ts")) or "/" in name:
                continue  # a model file, checked when the audit loads it
            if name.partition(":")[0] not in PREPROCESS:
                raise ConfigError(f"defence.names: {name!r} is neither an input transform ({', '.join(PREPROCESS)}) "
                                  "nor a model file")
            parse_spec(name)


@dataclass(frozen=True)
class AuditConfig:
    seed: int = 0
    n: int = 128  # test images audited (a seeded random sample of the split)
    split: SplitName = "test"
    batch_size: int = 64
    corruptions: CorruptionsConfig = field(default_factory=CorruptionsConfig)
    whitebox: WhiteboxConfig = field(default_factory=WhiteboxConfig)
    blackbox: BlackboxConfig = field(default_factory=BlackboxConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    onepixel: OnePixelConfig = field(default_factory=OnePixelConfig)
    maps: MapsConfig = field(default_factory=MapsConfig)
    backdoor: BackdoorSection = field(default_factory=BackdoorSection)
    defence: DefenceSection = field(default_factory=DefenceSection)

    def check(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be in [0, {MAX_SEED}], got {self.seed}")
        _at_least("n", self.n, 1)
        _at_least("batch_size", self.batch_size, 1)
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of train, val, test, got {self.split!r}")
        for section in (self.corruptions, self.whitebox, self.blackbox, self.patch, self.onepixel, self.maps,
                        self.backdoor, self.defence):
            section.check()
        if self.blackbox.enabled and not self.whitebox.enabled:
            raise ConfigError("blackbox needs whitebox enabled (it runs at the white-box budgets)")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        """The configuration as a TOML file that ``load_config`` reads back unchanged."""
        def value(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return json.dumps(v)
            if isinstance(v, list | tuple):
                return "[" + ", ".join(value(x) for x in v) + "]"
            return f"{v:g}" if isinstance(v, float) else str(v)

        data = self.to_json()
        lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
        for section, table in data.items():
            if isinstance(table, dict):
                doc = (type(getattr(self, section)).__doc__ or "").strip().splitlines()[0]
                lines += ["", f"[{section}]  # {doc}"] + [f"{k} = {value(v)}" for k, v in table.items()]
        return "\n".join(lines) + "\n"


def _at_least(name: str, value: int, lo: int) -> None:
    if value < lo:
        raise ConfigError(f"{name} must be >= {lo}, got {value}")


def _one_of(name: str, values: tuple[str, ...], known: tuple[str, ...], what: str = "attack") -> None:
    for v in values:
        if v not in known:
            raise ConfigError(f"{name}: unknown {what} {v!r} (known: {', '.join(known)})")


def _eps_list(name: str, values: tuple[float, ...]) -> None:
    if not values:
        raise ConfigError(f"{name} must hold at least one epsilon")
    for v in values:
        if not 0 < v <= 255:
            raise ConfigError(f"{name}: epsilons are in units of 1/255 and must be in (0, 255], got {v:g}")
    if list(values) != sorted(set(values)):
        raise ConfigError(f"{name} must be increasing without repeats, got {list(values)}")


def _convert(value: Any, hint: Any, where: str) -> Any:
    """TOML value -> the field's declared type, or a ConfigError naming the key."""
    origin = typing.get_origin(hint)
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table [{where}], got {type(value).__name__}")
        return _build(hint, value, where)
    if origin is tuple:
        (inner, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str or origin is Literal:  # a closed vocabulary's word: the section's check says which
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r}")  # pragma: no cover  (a bug, not a user error)


def _build(cls: Any, data: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        place = f" in [{where}]" if where else ""
        raise ConfigError(f"unknown key {unknown[0]!r}{place} (known: {', '.join(known)})")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> AuditConfig:
    cfg: AuditConfig = _build(AuditConfig, data)
    cfg.check()
    return cfg


def load_config(path: str | Path | None, **overrides: Any) -> AuditConfig:
    """Read a TOML audit config (None: the defaults), apply top-level overrides, check it all."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the config ({exc.strerror or exc})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    defences = overrides.pop("defences", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    section = data.get("defence") or {}
    if defences and isinstance(section, dict):  # medfool audit --defence NAME adds to the config's list
        names = section.get("names", [])
        data["defence"] = {**section, "names": [*(names if isinstance(names, list) else [names]), *defences]}
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None


