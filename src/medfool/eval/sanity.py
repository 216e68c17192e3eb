"""Sanity checks of an evaluation, after AutoAttack's (Croce & Hein, ICML 2020, ``checks.py``).

Each check returns ``{"check", "status" (ok | warn), "detail"}``. A warning does not stop an
audit: it tells the reader that a robustness number may be too optimistic and why. The model
checks run before any attack; the result checks read the audit's rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from medfool.attacks.goal import Goal
from medfool.models.classifier import Classifier
from medfool.vocab import MULTI_CLASS

__all__ = ["RISE_TOLERANCE", "Check", "model_checks", "result_checks", "rising_curves"]

Check = dict[str, str]

RISE_TOLERANCE = 1
"""Images by which an attack's robust accuracy may rise from a smaller budget to a larger one
before :func:`rising_curves` flags it: one image either way is the noise of a random start or a
random search, more is an attack that does not converge."""


def _check(name: str, ok: bool, detail: str) -> Check:
    return {"check": name, "status": "ok" if ok else "warn", "detail": detail}


def model_checks(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> list[Check]:
    """Checks on the model and its inputs: normalisation, softmax outputs, randomness, zero gradients."""
    out = []
    hi = float(torch.quantile(x.flatten()[: 1_000_000].float(), 0.999))
    spread = float(x.std())
    out.append(_check(
        "inputs in pixel space", hi > 0.1 and spread > 0.01,
        f"pixel values span [{float(x.min()):.3f}, {float(x.max()):.3f}] (99.9th percentile {hi:.3f}, "
        f"std {spread:.3f}); values bunched near 0 suggest images scaled or normalised twice"
        if hi <= 0.1 or spread <= 0.01 else
        f"pixel values span [{float(x.min()):.3f}, {float(x.max()):.3f}]; normalisation is inside the model "
        f"(mean {', '.join(f'{m:.2f}' for m in model.meta.mean)})"))
    model.eval()
    with torch.no_grad():
        z1, z2 = model(x), model(x)
    if model.task == MULTI_CLASS and z1.shape[1] > 1:
        looks_prob = bool((z1 >= 0).all() and (z1 <= 1).all() and torch.allclose(z1.sum(1), torch.ones(1), atol=1e-3))
        out.append(_check("outputs are logits", not looks_prob,
                          "the model outputs probabilities (rows in [0, 1] summing to 1): the loss saturates and "
                          "gradient attacks look weaker than they are; export the logits"
                          if looks_prob else "outputs are unnormalised scores (logits), as gradient attacks need"))
    diff = float((z1 - z2).abs().max())
    out.append(_check("deterministic model", diff == 0.0,
                      f"two forward passes on the same images differ by up to {diff:.3g}: randomness in the model "
                      "hides gradients (evaluate with expectation over transformation)"
                      if diff else "two forward passes give identical outputs"))
    xa = x.detach().clone().requires_grad_(True)
    goal = Goal(model.task, y, None)
    with torch.enable_grad():
        loss = goal.loss(model(xa), None, "ce")
        if loss.requires_grad:
            (grad,) = torch.autograd.grad(loss.sum(), xa, allow_unused=True)
        else:  # outputs detached from the input (a non-differentiable step, a hard threshold)
            grad = None
    zero = x.shape[0] if grad is None else int((grad.flatten(1).abs().amax(1) == 0).sum())
    out.append(_check("non-zero gradients", zero == 0,
                      f"{zero} of {x.shape[0]} images have an all-zero input gradient: gradient attacks cannot move "
                      "them (gradient masking or saturated outputs)" if zero else
                      f"all {x.shape[0]} images have a non-zero input gradient"))
    return out


def result_checks(rows: list[dict[str, Any]]) -> list[Check]:
    """Checks on attack results: black-box beating white-box, unchanged outputs, robust accuracy that
    rises with the budget (every attack, single-step ones included: an FGSM that overshoots at
    the larger budget still reports a robust accuracy that is too high)."""
    out = []
    by: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by[(r["stage"], r["attack"], r["budget"])][r["image"]] = r
    white = {k: v for k, v in by.items() if k[0] == "whitebox"}
    black = {k: v for k, v in by.items() if k[0] == "blackbox"}
    beaten = []
    for (_, battack, budget), brows in black.items():
        wins = {i for i, r in brows.items() if r["success"] and r["clean_correct"]}
        for (_, _, wbudget), wrows in white.items():
            if wbudget == budget:
                wins -= {i for i, r in wrows.items() if r["success"]}
        if wins:
            beaten.append(f"{battack} at {budget}: {len(wins)} image(s)")
    if black:
        out.append(_check("white-box beats black-box", not beaten,
                          "a query-only attack fooled images no gradient attack fooled at the same budget ("
                          + "; ".join(beaten) + "): a sign of gradient masking" if beaten else
                          "every image a black-box attack fooled was also fooled by a white-box attack at the same "
                          "budget"))
    unchanged = []
    # attacks that changed some image at some budget: an attack that returns the images it could
    # not break unchanged (the ensemble, as AutoAttack does) may change none at a tiny budget
    working = {(stage, attack) for (stage, attack, _), group in by.items() if any(r["l0"] > 0 for r in group.values())}
    for (stage, attack, budget), group in by.items():
        if stage in ("clean", "corruption"):
            continue
        fooled_same = [i for i, r in group.items() if r["success"] and r["clean_correct"] and r["l0"] == 0]
        if fooled_same:
            unchanged.append(f"{attack} {budget}: {len(fooled_same)}")
        if (stage, attack) not in working and any(r["clean_correct"] for r in group.values()):
            unchanged.append(f"{attack} {budget}: no image changed at all")
    out.append(_check("adversarial outputs differ from inputs", not unchanged,
                      "; ".join(unchanged) if unchanged else "every counted success changed its image"))
    rising = rising_curves(by)
    if rising is not None:
        out.append(_check("robust accuracy does not rise with the budget", not rising,
                          "a larger budget left more images correctly classified (" + "; ".join(rising) + "), by "
                          f"more than the {RISE_TOLERANCE} image(s) sampling noise allows: the attack is not "
                          "converging (or, single-step, overshooting), so its robust accuracy is too optimistic"
                          if rising else "no attack's robust accuracy rises with its budget by more than "
                          f"{RISE_TOLERANCE} image(s)"))
    return out


def _budget_value(budget: str) -> tuple[str, float] | None:
    """("/255", 4.0) for "4/255", ("px", 3.0) for "3 px"; None for a budget with no size."""
    head, _, unit = budget.strip().partition(" ")
    if head.endswith("/255"):
        head, unit = head[:-4], "/255"
    try:
        return unit, float(head)
    except ValueError:
        return None


def rising_curves(by: dict[tuple[str, str, str], dict[int, dict[str, Any]]]) -> list[str] | None:
    """Every attack (not the natural corruptions) whose robust accuracy at a larger budget is above
    its lowest at a smaller one by more than :data:`RISE_TOLERANCE` images, named with its budgets
    and figures; the worst rise per attack. ``by``: (stage, attack, budget) -> image -> row. None
    when no attack ran at two budgets of one kind."""
    curves: dict[tuple[str, str, str], list[tuple[float, str, int, int]]] = defaultdict(list)
    for (stage, attack, budget), group in by.items():
        value = _budget_value(budget)
        if stage in ("clean", "corruption") or value is None:
            continue
        kept = sum(bool(r["clean_correct"]) and not r["success"] for r in group.values())
        curves[(stage, attack, value[0])].append((value[1], budget, kept, len(group)))
    curves = {k: v for k, v in curves.items() if len(v) > 1}
    if not curves:
        return None

    def pct(kept: int, n: int) -> str:
        return f"{100 * kept / n:.0f} % ({kept} of {n})"

    found = []
    for (stage, attack, _), pts in curves.items():
        pts.sort()
        worst, low = None, pts[0]
        for pt in pts[1:]:
            # rise in images, on the smaller of the two samples
            rise = (pt[2] / pt[3] - low[2] / low[3]) * min(pt[3], low[3])
            if rise > RISE_TOLERANCE + 1e-9 and (worst is None or rise > worst[0]):
                worst = (rise, low, pt)
            if pt[2] / pt[3] < low[2] / low[3]:
                low = pt
        if worst is not None:
            _, a, b = worst
            found.append(f"{attack} ({stage}): {pct(a[2], a[3])} at {a[1]} -> {pct(b[2], b[3])} at {b[1]}")
    return found
