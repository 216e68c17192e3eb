"""Aggregate an audit's rows into the tables and sentences of its report (no model calls).

Success rates count only images the model classified correctly before the attack; sizes and
perceptibility are averaged over the successful ones (the perturbations that mattered).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from medfool.utils.stats import accuracy_breakdown, is_imbalanced, positive_class
from medfool.vocab import MULTI_LABEL

__all__ = [
    "NAIVE", "STAGE_ORDER", "Row", "backdoor_findings", "breakdown_finding", "corruption_findings",
    "corruption_table", "critical_flips", "findings", "flip_matrix", "robust_breakdown", "robust_figure", "role",
    "strongest", "summarise",
]

Row = dict[str, Any]
STAGE_ORDER = ("corruption", "whitebox", "minimal", "blackbox", "patch", "onepixel")
NAIVE = ("fgsm", "pgd", "bim")  # single-loss, fixed-step attacks: they overstate robustness on confident models


def role(stage: str, attack: str) -> str:
    """How the report labels a white-box row: the headline worst case, or the naive attacker."""
    if stage != "whitebox":
        return ""
    return "worst case" if attack == "ensemble" else "naive" if attack in NAIVE else ""


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def _mean(values: list[float | None]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else math.nan


def robust_breakdown(group: list[Row], classes: Sequence[str], critical: Sequence[int] = ()) -> dict[str, Any]:
    """The robust accuracy of one (stage, attack, budget)'s rows broken down
    (:func:`medfool.utils.stats.accuracy_breakdown`): an image counts when it was correct before
    and the attack failed; per class unless a row has no single label (multi-label); for two
    classes the positive one is the model's critical class if it names exactly one, else class 1."""
    labels = [r["label"] for r in group]
    single = all(lab is not None for lab in labels)
    return accuracy_breakdown([bool(r["clean_correct"]) and not r["success"] for r in group],
                              labels if single else None, classes,
                              positive=positive_class(critical, len(classes)))


def summarise(rows: list[Row], classes: Sequence[str] = (), critical: Sequence[int] = ()) -> list[dict[str, Any]]:
    """One summary per (stage, attack, budget), in report order, each with its robust accuracy's
    breakdown (``robust_breakdown``) over ``classes``."""
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in rows:
        if r["stage"] != "clean":
            groups[(r["stage"], r["attack"], r["budget"])].append(r)
    out: list[dict[str, Any]] = []
    for (stage, attack, budget), group in groups.items():
        counted = [r for r in group if r["clean_correct"]]
        won = [r for r in counted if r["success"]]
        out.append({
            "stage": stage, "attack": attack, "role": role(stage, attack), "budget": budget, "n": len(group),
            "clean_correct": len(counted),
            "success_rate": len(won) / len(counted) if counted else math.nan,
            "robust_accuracy": (len(counted) - len(won)) / len(group) if group else math.nan,
            "median_l2": _median([r["l2"] for r in won]), "median_linf_255": _median([255 * r["linf"] for r in won]),
            "median_l0": _median([r["l0"] for r in won]),
            "mean_psnr": _mean([r["psnr"] for r in won]), "mean_ssim": _mean([r["ssim"] for r in won]),
            "mean_ciede2000": _mean([r["ciede2000"] for r in won]),
            # costs over the images the success rate counts (a misclassified image costs one query)
            "mean_queries": _mean([r["queries"] for r in counted]),
            "mean_gradients": _mean([r["gradients"] for r in counted]),
            "time_per_image_s": _mean([r["time_s"] for r in group]),
            "robust_breakdown": robust_breakdown(group, classes, critical),
        })
    out.sort(key=lambda s: (STAGE_ORDER.index(s["stage"]) if s["stage"] in STAGE_ORDER else 99, s["attack"],
                            _budget_key(str(s["budget"]))))
    return out


def _budget_key(budget: str) -> float:
    head = budget.split()[0].split("/")[0]
    try:
        return float(head)
    except ValueError:
        return math.inf


def flip_matrix(rows: list[Row], stage: str, attack: str, budget: str, k: int) -> list[list[int]]:
    """counts[true][adversarial] over successful flips of correctly classified images."""
    m = [[0] * k for _ in range(k)]
    for r in rows:
        if (r["stage"], r["attack"], r["budget"]) == (stage, attack, budget) and r["success"] and r["clean_correct"] \
                and r["label"] is not None:
            m[r["label"]][r["adv_pred"]] += 1
    return m


def strongest(summaries: list[dict[str, Any]], stage: str) -> dict[str, Any] | None:
    """The stage's most successful attack at its largest budget (the ensemble where it ran: it
    is the worst case the audit vouches for)."""
    cand = [s for s in summaries if s["stage"] == stage and not math.isnan(s["success_rate"])]
    if not cand:
        return None
    top = max(_budget_key(s["budget"]) for s in cand)
    at_top = [s for s in cand if _budget_key(s["budget"]) == top]
    headline = [s for s in at_top if s["attack"] == "ensemble"]
    if headline:
        return headline[0]
    return max(at_top, key=lambda s: (s["success_rate"], s["mean_gradients"]))  # ties: the iterative attack


def critical_flips(rows: list[Row], stage: str, attack: str, budget: str, critical: list[int]) -> tuple[int, int]:
    """(critical-class tiles read as a non-critical class, correctly classified critical tiles)."""
    crit = set(critical)
    sel = [r for r in rows if (r["stage"], r["attack"], r["budget"]) == (stage, attack, budget)
           and r["clean_correct"] and r["label"] in crit]
    missed = [r for r in sel if r["success"] and r["adv_pred"] not in crit]
    return len(missed), len(sel)


def protocol_words(preset: str) -> str:
    """How the ensemble's budgets are named: AutoAttack's protocol only at its own budgets."""
    if preset == "standard":
        return "AutoAttack's protocol at its own budgets, the standard preset"
    return f"AutoAttack's members at reduced budgets, the {preset or 'fast'} preset"


def _pct(v: float | None) -> str:
    """A rate as a percentage; NaN, or null as JSON stores it, is "n/a"."""
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:.0f} %"


def findings(meta: dict[str, Any], clean: dict[str, Any] | None, summaries: list[dict[str, Any]],
             rows: list[Row], maps: list[dict[str, Any]], checks: list[dict[str, str]],
             backdoor: dict[str, Any] | None = None) -> list[str]:
    """Plain-language sentences for the top of the report, each from a measured number, in the
    report's order: clean accuracy, natural variation, white-box, black-box, patch, few pixels,
    maps, tampering, the sanity checks."""
    out = []
    if clean:
        auc = clean.get("auc", math.nan)
        out.append(f"Before any attack the model is right on {_pct(clean['accuracy'])} of {clean['n']:,} "
                   f"{meta['dataset']} test images (AUC {auc:.3f}).")
    out.extend(corruption_findings(summaries))
    out.extend(_whitebox_findings(meta, summaries, rows))
    out.extend(_blackbox_findings(summaries))
    out.extend(_patch_findings(meta, summaries))
    out.extend(_pixel_findings(meta, summaries, rows, maps))
    if backdoor:
        out.extend(backdoor_findings(backdoor))
    warns = [c for c in checks if c["status"] != "ok"]
    out.append(f"All {len(checks)} sanity checks passed." if not warns else
               f"{len(warns)} of {len(checks)} sanity checks warn ({', '.join(c['check'] for c in warns)}): "
               "read the numbers below with that in mind.")
    return out


def _critical(meta: dict[str, Any]) -> tuple[list[int], str]:
    critical = meta.get("critical") or []
    return critical, " or ".join(meta["classes"][i] for i in critical) if critical else ""


def _whitebox_findings(meta: dict[str, Any], summaries: list[dict[str, Any]], rows: list[Row]) -> list[str]:
    """The ensemble's robust accuracy (the headline), the smallest budget that flips half the
    images, the per-class detail and the missed diagnoses."""
    classes = meta["classes"]
    critical, crit_name = _critical(meta)
    out: list[str] = []
    wb = [s for s in summaries if s["stage"] == "whitebox" and not math.isnan(s["success_rate"])]
    ens = sorted([s for s in wb if s["attack"] == "ensemble"], key=lambda s: _budget_key(s["budget"]))
    if ens:
        preset = ((meta.get("config") or {}).get("whitebox") or {}).get("ensemble", "")
        at = ens[-1]
        naive = sorted((s for s in wb if s["role"] == "naive" and s["budget"] == at["budget"]),
                       key=lambda s: s["attack"])
        shown = ens[-2:]
        over = ("APGD-CE, APGD with the margin loss and Square" if meta.get("task") == MULTI_LABEL
                else "APGD-CE, APGD-T, FAB-T and Square")
        b = at["robust_breakdown"]
        balanced = is_imbalanced(b, len(classes))
        why = (f"the mean over classes: the sample is {_pct(b['constant'])} {b['majority']}, so plain accuracy "
               "would flatter a model that leans to it" if balanced else "")
        naive_part = ("the naive attacker would report " + ("balanced " if balanced else "") + ", ".join(
            f"{s['attack'].upper()} {robust_figure(s['robust_breakdown'], len(classes), interval=False)}"
            for s in naive) + f" at {at['budget']}") if naive else ""
        tail = "; ".join(p for p in (why, naive_part) if p)
        out.append(
            f"Against the strongest attacker the audit runs (the worst case per image over {over}, "
            f"{protocol_words(preset)}"
            + ("; the model is defended, so each image is the worst case of the naive attacker and the adaptive "
               "one (BPDA, EOT, judged as deployed)" if meta.get("defended") else "")
            + f"), {'balanced ' if balanced else ''}robust accuracy is "
            + " and ".join(f"{robust_figure(s['robust_breakdown'], len(classes))} at {s['budget']}" for s in shown)
            + (f" ({tail})." if tail else "."))
    if not wb:
        return out
    # the smallest budget at which an attack flips at least half; else the most successful
    best = max(wb, key=lambda s: (1, -_budget_key(s["budget"]), s["success_rate"]) if s["success_rate"] >= 0.5
               else (0, s["success_rate"], -_budget_key(str(s["budget"]))))
    psnr = best["mean_psnr"]
    seen = "" if math.isnan(psnr) else f", PSNR {psnr:.0f} dB" + (": invisible to the eye" if psnr >= 40 else "")
    who = "the ensemble" if best["attack"] == "ensemble" else best["attack"].upper()
    out.append(f"With full access to the model, a change of at most {best['budget']} per pixel value "
               f"({who}{seen}) flips {_pct(best['success_rate'])} of the correctly "
               "classified images.")
    top = strongest(summaries, "whitebox")
    if top:
        detail = breakdown_finding(top)
        if detail:
            out.append(detail)
    if top and critical:
        missed, total = critical_flips(rows, "whitebox", top["attack"], top["budget"], critical)
        if total:
            out.append(f"At {top['budget']}, {missed} of {total} correctly classified {crit_name} images "
                       f"({_pct(missed / total)}) were read as a non-critical class: a missed diagnosis.")
    return out


def _blackbox_findings(summaries: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for bb in [s for s in summaries if s["stage"] == "blackbox" and s is strongest(
            [t for t in summaries if t["attack"] == s["attack"]], "blackbox")]:
        if bb["attack"] == "noise":
            out.append(f"Random noise of the same size ({bb['budget']}, {int(bb['mean_queries'])} tries per image "
                       f"on average) flips {_pct(bb['success_rate'])}: "
                       + ("the model is fragile even to unoptimised noise." if bb["success_rate"] > 0.1 else
                          "the danger comes from optimised changes, not from noise."))
        else:
            out.append(f"Without any access to the model's insides, only its output probabilities, a search of "
                       f"{int(bb['mean_queries'])} queries per image on average ({bb['attack'].capitalize()}, "
                       f"{bb['budget']}) flips {_pct(bb['success_rate'])} of the correctly classified images.")
    return out


def _patch_findings(meta: dict[str, Any], summaries: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    patch = [s for s in summaries if s["stage"] == "patch"]
    adv = next((s for s in patch if s["attack"] == "patch"), None)
    nat = next((s for s in patch if s["attack"] == "natural-patch"), None)
    if adv:
        target = meta.get("patch_target_name", "the target class")
        out.append(f"A printed sticker covering {float(adv['budget'].split()[0]) * 100:.0f} % of the image makes "
                   f"{_pct(adv['success_rate'])} of images of other classes read as '{target}'"
                   + (f" (a real crop of '{target}' of the same size: {_pct(nat['success_rate'])})." if nat
                      else "."))
    return out


def _pixel_findings(meta: dict[str, Any], summaries: list[dict[str, Any]], rows: list[Row],
                    maps: list[dict[str, Any]]) -> list[str]:
    critical, crit_name = _critical(meta)
    out: list[str] = []
    for s in [s for s in summaries if s["stage"] == "onepixel"]:
        k = int(s["budget"].split()[0])
        line = (f"Changing {'one pixel' if k == 1 else f'{k} pixels'} (of {math.prod(meta['image_shape'][1:]):,}) "
                f"flips {_pct(s['success_rate'])} of the correctly classified images ({s['clean_correct']} tried)")
        if critical:
            missed, total = critical_flips(rows, "onepixel", s["attack"], s["budget"], critical)
            if total:
                line += f"; {missed} of {total} {crit_name} images were read as a non-critical class"
        out.append(line + ".")
    for m in maps:
        tested = "" if m.get("stride", 1) == 1 else f" tested (every {m['stride']} px)"
        out.append(f"On {m['label']} tile {m['image']}, {m['fooled_pixels']} of {m['pixels']} single pixels{tested} "
                   "flip the prediction on their own (vulnerability map below).")
    return out


def robust_figure(b: dict[str, Any], num_classes: int, *, interval: bool = True) -> str:
    """The figure to quote for a robust accuracy breakdown: its balanced accuracy when the sample is
    imbalanced (:func:`medfool.utils.stats.is_imbalanced`), else its accuracy, with the 95 %
    interval unless ``interval`` is False: "50 % (95 % CI 43-57 %)"."""
    value, (lo, hi) = (b["balanced"], b["balanced_ci95"]) if is_imbalanced(b, num_classes) else (b["accuracy"],
                                                                                                   b["ci95"])
    if not interval or lo is None or math.isnan(lo):
        return _pct(value)
    return f"{_pct(value)} (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)"


def breakdown_finding(s: dict[str, Any]) -> str:
    """What the robust accuracy of summary ``s`` hides: for two classes robust sensitivity and
    specificity, for more the weakest and the strongest class; and the constant-classifier line.
    Empty for multi-label summaries."""
    b = s["robust_breakdown"]
    per_class = b.get("per_class")
    if not per_class or "constant" not in b:
        return ""
    who = "the worst case" if s["attack"] == "ensemble" else s["attack"].upper()

    def ci(key: str) -> str:
        lo, hi = b[f"{key}_ci95"]
        return "" if lo is None or math.isnan(lo) else f" (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)"

    if "sensitivity" in b:
        what = (f"robust sensitivity ({b['positive']}) {_pct(b['sensitivity'])}{ci('sensitivity')} and robust "
                f"specificity {_pct(b['specificity'])}{ci('specificity')}")
    else:
        ranked = sorted(per_class.items(), key=lambda kv: kv[1]["accuracy"])
        (weak, w), (strong, t) = ranked[0], ranked[-1]
        what = (f"every class at {_pct(w['accuracy'])}" if w["accuracy"] == t["accuracy"] else
                f"its weakest class, {weak}, at {_pct(w['accuracy'])} ({w['correct']} of {w['n']}) and its "
                f"strongest, {strong}, at {_pct(t['accuracy'])} ({t['correct']} of {t['n']})")
    return (f"At {s['budget']} {who} leaves {what}; a constant '{b['majority']}' answer would keep "
            f"{_pct(b['constant'])} (balanced {_pct(b['constant_balanced'])}).")


def corruption_table(summaries: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """{corruption: {severity: accuracy}} over the audited images."""
    table: dict[str, dict[int, float]] = {}
    for s in summaries:
        if s["stage"] == "corruption":
            table.setdefault(s["attack"], {})[int(str(s["budget"]).split()[-1])] = s["robust_accuracy"]
    return table


def corruption_findings(summaries: list[dict[str, Any]]) -> list[str]:
    """The worst ordinary corruption at a middle and at the highest severity."""
    table = corruption_table(summaries)
    if not table:
        return []
    severities = sorted({k for row in table.values() for k in row})
    picks = [severities[len(severities) // 2], severities[-1]] if len(severities) > 1 else severities
    parts = []
    for sev in dict.fromkeys(picks):
        worst = min(((name, row[sev]) for name, row in table.items() if sev in row), key=lambda t: t[1])
        parts.append(f"at severity {sev} of 5 the worst, {worst[0]}, leaves {_pct(worst[1])} correctly classified")
    return ["Ordinary variation, no attacker: of the natural corruptions (scanner and acquisition changes), "
            + "; ".join(parts) + "."]


def backdoor_findings(bd: dict[str, Any]) -> list[str]:
    """Sentences about a backdoor retraining run (medfool.runs.poisoning's results)."""
    p, bad, clean = bd["poison"], bd["poisoned_model"], bd["clean_model"]
    drop = 100 * (clean["test"]["accuracy"] - bad["test"]["accuracy"])
    out = [f"Tampering with {p['n_poisoned']} of {p['n_train']:,} training images ({p['rate']:.1%}; {p['trigger']}) "
           f"makes the retrained model read {_pct(bad['backdoor']['asr'])} of triggered images as "
           f"'{bd.get('target_name') or 'the next class'}', while its clean accuracy changes by {-drop:+.1f} points: "
           "the usual validation would not notice."]
    det = {k: v for k, v in (bd.get("detection") or {}).items() if isinstance(v, dict) and "tpr" in v and "auroc" in v}
    if det:
        name, best = max(det.items(), key=lambda kv: kv[1]["tpr"] - kv[1]["fpr"])
        found = f"{_pct(best['tpr'])} of the poisoned training images at {_pct(best['fpr'])} false positives"
        line = (f"The best detector, {name}, flags {found}" if best["tpr"] >= 0.5 else
                f"No training-set detector finds the poisons (the best, {name}, flags {found})")
        again = (bd.get("retrained") or {}).get(name)
        if again:
            line += (f"; retrained without what it flagged, the backdoor works on {_pct(again['backdoor']['asr'])}"
                     " of images")
        out.append(line + ".")
    nc = (bd.get("detection") or {}).get("neural-cleanse")
    if nc and nc.get("infected"):
        names = bd.get("class_names") or []
        which = ", ".join(names[k] if k < len(names) else str(k) for k in nc["infected"])
        hit = "the attack's target" if nc.get("true_target") in nc["infected"] else "not the attack's target"
        out.append(f"Neural Cleanse singles out '{which}' as backdoored ({hit}).")
    return out
