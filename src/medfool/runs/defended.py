"""The defended models a run measures and the one measurement made of each.

``medfool defend evaluate`` and the audit's defence section both turn what the user names (a
defended checkpoint, an input transform put in front of a model) into :class:`Defended` and
measure it with :func:`measure_defence`: the naive attacker, the gradient-free masking check and
the adaptive attacker at each budget, the defended model's sanity checks, clean accuracy and
inference cost."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from medfool.data.dataset import Dataset, Split
from medfool.defences.evaluation import BudgetRow, DefenceReport, Held, attack_defence, defence_kind, inference_ms
from medfool.defences.input_transforms import with_transforms
from medfool.eval.sanity import model_checks
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.models.metrics import evaluate
from medfool.models.preprocess import parse_spec
from medfool.runs.common import Say, match_model_to_data, to_log
from medfool.utils.repro import file_digest, fingerprint
from medfool.vocab import Preset

__all__ = ["MODEL_SUFFIXES", "Defended", "defences_named", "load_defended", "measure_defence", "transformed"]

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ts")
"""A defence named by a path with one of these endings (or any path with a folder) is a model file."""


@dataclass(frozen=True)
class Defended:
    """A defended model to measure: its name, kind, the model and its training cost."""

    name: str
    kind: str
    model: Classifier
    digest: str           # what identifies it (file digests, settings) for resuming
    train_s: float | None = None


def load_defended(path: str, device: torch.device | str = "cpu") -> tuple[Defended, dict[str, Any]]:
    """A checkpoint as a defence to measure (named after its file, or its folder for
    model.safetensors), and its training record; loaded once."""
    model, record = load_classifier(path, device=device)
    name = Path(path).stem if Path(path).stem != "model" else Path(path).parent.name
    return Defended(name, defence_kind(model, record), model, file_digest(path), record.get("train_wall_s")), record


def transformed(base: Defended, spec: Mapping[str, object], name: str | None = None) -> Defended:
    """``base`` with the input transform ``spec`` in front (``{"name": "jpeg", "quality": 75}``)."""
    label = name or str(spec["name"]) + "".join(f" {k}={v}" for k, v in spec.items() if k != "name")
    model = with_transforms(base.model, [dict(spec)])
    # what it is, whatever the base is (an ensemble behind a JPEG is a transform); random when deployed
    kind = "input transform, random" if model.randomised else "input transform"
    return Defended(label, kind, model, fingerprint({"base": base.digest, "spec": dict(spec)}))


def defences_named(model: Classifier, dataset: Dataset, names: Sequence[str]) -> list[Defended]:
    """The audit's defences: the audited model itself when it carries defences (input transforms,
    an ensemble), then each name, a defended checkpoint (loaded and checked against the data
    here, before any unit runs) or an input transform put in front of the audited model."""
    audited = Defended("the audited model", defence_kind(model, {}), model, "audited")
    out = [audited] if model.meta.preprocess or model.meta.arch == "ensemble" else []
    for name in names:
        if Path(name).suffix in MODEL_SUFFIXES or "/" in name:
            d, _ = load_defended(name, device=model.device)
            match_model_to_data(d.model, dataset, name)
            out.append(replace(d, name=name))
        else:  # named and identified by its spec, as the audit's units have always been
            out.append(replace(transformed(audited, parse_spec(name), name=name), digest=name))
    return out


def measure_defence(d: Defended, split: Split, x: torch.Tensor, y: torch.Tensor, ids: Sequence[int],
                    eps: Sequence[float], *, names: Sequence[str], positive: int | None, preset: Preset, seed: int,
                    eot: int,
                    baseline_clean: float | None = None, baseline_rows: Mapping[float, dict[str, Any]] | None = None,
                    baseline_infer_ms: float | None = None, say: Say = to_log,
                    held_at: Callable[[float], Held] | None = None) -> dict[str, Any]:
    """One defence at every budget (``eps`` in [0, 1] units): robust accuracy under the naive
    attacker, the masking check and the adaptive attacker with their per-class breakdowns, beside
    the undefended model's robust figures where ``baseline_rows`` has them (keyed by the budget
    rounded to 6 places); the defended model's gradient-masking sanity checks, its clean accuracy
    on ``split`` and its inference cost. ``names`` and ``positive`` (the class robust sensitivity
    counts) label the per-class figures, as the caller labels its other rows. ``held_at(eps)``
    runs the three attackers elsewhere (on Ray workers, chunk by chunk); by default here. Returns
    the report as JSON."""
    start = time.perf_counter()
    rows = []
    for e in eps:
        held = held_at(e) if held_at is not None else \
            attack_defence(d.model, x, y, list(ids), e, preset=preset, seed=seed, eot=eot)
        row = BudgetRow.of(e, held, y, names, positive=positive,
                           baseline=(baseline_rows or {}).get(round(e, 6)))
        rows.append(row)
        a = row.breakdown["adaptive"]
        say(f"  {e * 255:g}/255: robust accuracy naive {row.naive:.1%}, masking check {row.masking_check:.1%}, "
            f"adaptive {row.adaptive:.1%} [{a['ci95'][0]:.1%}, {a['ci95'][1]:.1%}]"
            + (f", balanced {a['balanced']:.1%}, constant answer {a['constant']:.1%}" if "balanced" in a else ""))
    cost: dict[str, float] = {"infer_ms": inference_ms(d.model, x), "eval_s": time.perf_counter() - start}
    if d.train_s is not None:
        cost["train_s"] = d.train_s
    if baseline_infer_ms is not None:
        cost["baseline_infer_ms"] = baseline_infer_ms
    report = DefenceReport(d.name, d.kind, evaluate(d.model, split)["accuracy"], baseline_clean, rows, len(ids), cost,
                           random=d.model.randomised, checks=model_checks(d.model, x[:32], y[:32]))
    return report.to_json()
