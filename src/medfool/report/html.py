"""Render an audit's store as one self-contained HTML page (images embedded) and results.json.

Everything shown is read from the store: re-rendering never runs the model again. The page
has no scripts, so it opens the same in any browser, offline, and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import sqlite3
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medfool.defences.evaluation import BudgetRow, DefenceReport
from medfool.errors import ConfigError
from medfool.eval.sanity import result_checks
from medfool.eval.store import ResultStore
from medfool.report.plots import line_chart
from medfool.report.summary import (
    corruption_table,
    findings,
    flip_matrix,
    strongest,
    summarise,
)
from medfool.utils.io import atomic_write_bytes, atomic_write_json, json_safe
from medfool.utils.stats import is_imbalanced
from medfool.vocab import MULTI_LABEL

__all__ = ["CSS", "INLINE_CLASSES", "THREATS", "breakdown_table", "breakdown_tables", "collect", "ensemble_members",
           "img_tag", "page", "render"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;max-width:100%}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:right}
table.breakdown{font-size:.85em}table.breakdown td:not(.l){white-space:nowrap}
.ci{font-size:.85em;color:#666;white-space:normal}.ci span{white-space:nowrap}
th{background:#f3f3f3}td.l,th.l{text-align:left}.findings li{margin:.35em 0}
.missed{background:#f7d0d0}.alarm{background:#fdeccc}.diag{color:#999}
span.missed{background:#f4b6b6}span.alarm{background:#fde3b0}
.ok{color:#17703a;font-weight:bold}.warn{color:#b35c00;font-weight:bold}.muted{color:#666;font-size:.9em}
.figs img{max-width:49%;border:1px solid #eee;margin:.3em .3em .3em 0;vertical-align:top}
.legend span{padding:.1em .5em;margin-right:1em}
"""

THREATS = {
    "corruption": ("natural variation (no attacker)", "nothing", "nothing: scanner, stain and acquisition vary",
                   "graded corruptions (MedMNIST-C)"),
    "whitebox": ("white-box gradient attacks", "everything: weights and gradients", "the image file before the model",
                 "every pixel value, by at most eps"),
    "minimal": ("minimal-perturbation attack", "weights and gradients", "the image file before the model",
                "every pixel, as little as needed to flip"),
    "blackbox": ("score-based black-box search (Square; random noise)", "the output probabilities only",
                 "the image file before the model", "every pixel value, by at most eps"),
    "patch": ("universal adversarial patch", "gradients of the model while crafting; nothing at use",
              "a sticker or marking on the slide / film, anywhere, any orientation", "a square covering the area"),
    "onepixel": ("few-pixel differential evolution", "output probabilities (one gradient for the start)",
                 "the image file", "k pixels, any colour"),
}


def img_tag(data: bytes, alt: str) -> str:
    """A PNG embedded as a data URI (the report is one self-contained file)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _pct(v: float | None) -> str:
    return "&ndash;" if v is None or math.isnan(v) else f"{100 * v:.1f} %"


def _table(head: list[str], body: list[list[str]], left: int = 1) -> str:
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(head))
    rows = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in body)
    return f"<table><tr>{th}</tr>{rows}</table>"


def _with_ci(value: float | None, ci: Sequence[float | None] | None, note: str = "") -> str:
    """A rate and, on a second, smaller line, ``note`` and its 95 % interval (these two may wrap
    apart in a narrow column)."""
    if value is None or math.isnan(value):
        return "&ndash;"
    lo, hi = ci if ci else (None, None)
    interval = "" if lo is None or hi is None or math.isnan(lo) else f"{100 * lo:.0f}&ndash;{100 * hi:.0f}"
    below = ", ".join(f"<span>{p}</span>" for p in (note, interval) if p)
    return _pct(value) + (f"<br><span class='ci'>{below}</span>" if below else "")


def _class_names(rows: Sequence[tuple[Sequence[str], Mapping[str, Any]]]) -> list[str]:
    """The classes of a set of breakdowns, in class order (the union over the rows)."""
    order: dict[str, int] = {}
    for _, b in rows:
        for name, c in (b.get("per_class") or {}).items():
            order[name] = min(order.get(name, c["class"]), c["class"])
    return sorted(order, key=order.__getitem__)


def breakdown_table(rows: Sequence[tuple[Sequence[str], Mapping[str, Any]]], head: Sequence[str], *,
                    left: int | None = None, overall: bool = True, classes: Sequence[str] | None = None,
                    label: str = "accuracy") -> str:
    """An HTML table of accuracy breakdowns (:func:`medfool.utils.stats.accuracy_breakdown` dicts),
    one row per (leading cells, breakdown).

    After the leading cells (HTML, named by ``head``; the first ``left`` of them, default all,
    left aligned) come, when ``overall``, the accuracy (headed ``label``) and the balanced
    accuracy, each with its 95 % interval (whole percent) below it; then each class of
    ``classes`` (default: every class of the rows) with its accuracy and, below, correct/images
    and the interval (for two classes headed as what they are: the positive class's is the
    sensitivity, the other's the specificity); then, when ``overall``, the constant-classifier
    line (the largest class's share of the row's images, and its name). Breakdowns of
    multi-label samples (overall figure only) leave the other columns out.
    :func:`breakdown_tables` splits many classes over several tables that fit the page."""
    names = _class_names(rows) if classes is None else list(classes)
    single = bool(_class_names(rows))
    positive = next((b["positive"] for _, b in rows if "positive" in b), None)
    columns = ([html.escape(label)] + (["balanced"] if single else [])) if overall else []
    columns += [html.escape(n) + ("" if positive is None else " (sensitivity)" if n == positive else " (specificity)")
                for n in names]
    columns += ["constant answer"] if overall and single else []
    body = []
    for lead, b in rows:
        pc = b.get("per_class") or {}
        cells = [*lead]
        if overall:
            cells.append(_with_ci(b["accuracy"], b.get("ci95")))
            if single:
                cells.append(_with_ci(b.get("balanced"), b.get("balanced_ci95")))
        for n in names:
            c = pc.get(n)
            cells.append("&ndash;" if c is None else _with_ci(c["accuracy"], c["ci95"], f"{c['correct']}/{c['n']}"))
        if overall and single:
            cells.append("&ndash;" if "constant" not in b else
                         f"{_pct(b['constant'])}<br><span class='ci'>{html.escape(str(b['majority']))}</span>")
        body.append(cells)
    return _table([*head, *columns], body, left=len(head) if left is None else left).replace(
        "<table>", "<table class='breakdown'>", 1)


INLINE_CLASSES = 4
"""Up to this many classes, :func:`breakdown_tables` shows the per-class figures in the same table
as the overall ones; above it, in tables of their own of at most ``2 * INLINE_CLASSES`` classes
each, so that every table fits a 1,300 px window."""


def breakdown_tables(rows: Sequence[tuple[Sequence[str], Mapping[str, Any]]], head: Sequence[str], *,
                     left: int | None = None, label: str = "accuracy") -> str:
    """Accuracy breakdowns as HTML that fits the page: one :func:`breakdown_table` with every figure
    for up to :data:`INLINE_CLASSES` classes; else the overall figures first, then the per-class
    figures in tables of at most ``2 * INLINE_CLASSES`` classes (as even as possible), each row
    led by the same cells. For any robust accuracy of the report (attacks, defences)."""
    names = _class_names(rows)
    if len(names) <= INLINE_CLASSES:
        return breakdown_table(rows, head, left=left, label=label)
    parts = math.ceil(len(names) / (2 * INLINE_CLASSES))
    size = math.ceil(len(names) / parts)
    return breakdown_table(rows, head, left=left, classes=(), label=label) + "".join(
        breakdown_table(rows, head, left=left, overall=False, classes=names[i:i + size])
        for i in range(0, len(names), size))


def _curve_png(summaries: list[dict[str, Any]], num_classes: int) -> bytes | None:
    """Robust accuracy against the budget, beside the constant-classifier line; balanced accuracy
    (and the constant answer's 1/K) when the sample is imbalanced."""
    plotted = [s for s in summaries if s["stage"] in ("whitebox", "blackbox") and s["budget"].endswith("/255")]
    ref = next((s["robust_breakdown"] for s in plotted if "constant" in s["robust_breakdown"]), None)
    balanced = ref is not None and is_imbalanced(ref, num_classes)
    series: dict[str, dict[float, float]] = {}
    for s in plotted:
        label = s["attack"] + (" (black-box)" if s["stage"] == "blackbox" else f" ({s['role']})" if s.get("role")
                               else "")
        figure = s["robust_breakdown"]["balanced"] if balanced else s["robust_accuracy"]
        series.setdefault(label, {})[float(s["budget"][:-4])] = figure
    if not series:
        return None
    eps = sorted({e for pts in series.values() for e in pts})
    if ref is not None:
        line = ref["constant_balanced"] if balanced else ref["constant"]
        series[f"constant answer '{ref['majority']}'"] = dict.fromkeys(eps, line)
    what = "balanced robust accuracy" if balanced else "robust accuracy"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "curve.png"
        line_chart(path, eps, {k: [v.get(e, math.nan) for e in eps] for k, v in series.items()},
                   xlabel="epsilon (x/255, Linf)", ylabel=what, title=f"{what} vs budget")
        return path.read_bytes()


def _flip_table(matrix: list[list[int]], classes: list[str], critical: set[int]) -> str:
    """Rows: true class; columns: the class read after the attack; dangerous cells coloured."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    body = []
    for t, row in enumerate(matrix):
        cells = [f"<td class='l'>{html.escape(classes[t])}</td>"]
        for a, count in enumerate(row):
            cls = "diag" if a == t else "missed" if t in critical and a not in critical else \
                "alarm" if t not in critical and a in critical else ""
            cells.append(f"<td class='{cls}'>{'&middot;' if a == t else count}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr><th class='l'>true \\ read as</th>{head}</tr>{''.join(body)}</table>"


def collect(store: ResultStore) -> dict[str, Any]:
    """Everything the report shows, as JSON-able data (results.json)."""
    meta = {k: store.get_meta(k) for k in ("config", "seed", "environment", "model", "dataset", "dataset_source",
                                           "classes", "critical", "task", "images", "image_shape", "command",
                                           "patch_target", "patch_target_name", "started", "skipped", "native",
                                           "defended")}
    rows = store.rows()
    summaries = summarise(rows, meta["classes"] or [], meta["critical"] or [])
    maps = [json.loads(d) for n, _, d in store.artifacts("map-") if n.endswith("-json")]
    clean = store.json_artifact("clean")
    backdoor = store.json_artifact("backdoor-json")
    defences = defence_results(store, summaries)
    # every defended model's own gradient-masking checks beside the audited model's
    checks = ((store.json_artifact("sanity-model") or []) + result_checks(rows)
              + [{**c, "check": f"{d['name']}: {c['check']}"} for d in defences for c in d.get("checks", [])])
    members = ensemble_members([json.loads(d) for _, _, d in store.artifacts("members-")])
    flips = []
    if meta["task"] != MULTI_LABEL:
        for stage in ("whitebox", "onepixel"):
            top = strongest(summaries, stage)
            if top:
                flips.append({"stage": stage, "attack": top["attack"], "budget": top["budget"],
                              "matrix": flip_matrix(rows, stage, top["attack"], top["budget"], len(meta["classes"]))})
    found = findings(meta, clean, summaries, rows, maps, checks, backdoor) + [d["finding"] for d in defences]
    return {"meta": meta, "clean": clean, "findings": found, "defences": defences,
            "sanity": checks, "summaries": summaries, "flip_matrices": flips, "maps": maps, "rows": rows,
            "backdoor": backdoor, "corruptions": corruption_table(summaries), "ensemble_members": members,
            "units_done": len(store.done_units()), "cells": store.cells()}


def defence_results(store: ResultStore, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The defence units' reports, each budget joined with the audited model's worst case (the
    white-box ensemble at that budget) as the undefended reference, and the finding re-worded
    with it."""
    ensemble = {s["budget"]: s["robust_accuracy"] for s in summaries
                if s["stage"] == "whitebox" and s["attack"] == "ensemble"}
    out = []
    for _, _, blob in store.artifacts("defence-"):
        data = json.loads(blob)
        if data["name"] != "the audited model":
            for row in data["rows"]:
                row["baseline"] = ensemble.get(f"{row['eps_255']:g}/255")
        report = DefenceReport(data["name"], data["kind"], data["clean_accuracy"], data["baseline_clean_accuracy"],
                               [BudgetRow(r["eps"], r["naive"], r["masking_check"], r["adaptive"], r["baseline"],
                                          r.get("breakdown") or {}) for r in data["rows"]], data["n"], data["cost"],
                               random=bool(data.get("random")))
        data["finding"] = report.finding
        out.append(data)
    return out


def _defence_section(defences: list[dict[str, Any]]) -> str:
    parts = ["<h2 id='defences'>Defences: the naive and the adaptive attacker</h2><p class='muted'>Robust accuracy "
             "(share of all audited images still correctly classified, 95 % interval). <b>naive</b>: the ensemble's "
             "gradient attacks on the gradients the deployed model gives, defence ignored; <b>masking check</b>: "
             "Square, gradient-free; <b>adaptive</b>: the whole ensemble with BPDA through input transforms, a vote "
             "attacked through its members' mean log-probability and EOT over random transforms, every image "
             "judged by the model as deployed, per image the worst case of all three: the defence's headline "
             "(Athalye et al. 2018; Tramer et al. 2020). A naive figure far above the adaptive one is gradient "
             "masking, not robustness. <b>undefended</b>: the audited model under the white-box ensemble.</p>"]
    for d in defences:
        cost = d.get("cost") or {}
        infer = (f"{cost['infer_ms']:.2f} ms / image" + (f" (undefended {cost['baseline_infer_ms']:.2f})"
                                                          if "baseline_infer_ms" in cost else "")) if cost else ""
        train = f", trained in {cost['train_s']:.0f} s" if "train_s" in cost else ""
        clean = _pct(d["clean_accuracy"]) + (f" (undefended {_pct(d['baseline_clean_accuracy'])})"
                                             if d.get("baseline_clean_accuracy") is not None else "")

        def cell(r: dict[str, Any], who: str) -> str:
            return _with_ci(r[who], ((r.get("breakdown") or {}).get(who) or {}).get("ci95"))
        parts.append(f"<h3>{html.escape(d['name'])} <span class='muted'>({html.escape(d['kind'])})</span></h3>"
                     f"<p>{html.escape(d['finding'])}</p>"
                     f"<p class='muted'>clean accuracy {clean} &middot; inference {infer}{train}</p>" + _table(
                         ["budget", "naive", "masking check", "adaptive", "undefended"],
                         [[f"{r['eps_255']:g}/255", cell(r, "naive"), cell(r, "masking_check"),
                           f"<b>{cell(r, 'adaptive')}</b>", _pct(r.get("baseline"))] for r in d["rows"]])
                     + breakdown_tables([([f"{r['eps_255']:g}/255"], r["breakdown"]["adaptive"]) for r in d["rows"]
                                         if (r.get("breakdown") or {}).get("adaptive")],
                                        ["adaptive attacker at"], label="robust accuracy"))
    return "".join(parts)


def ensemble_members(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """{budget: {member: correctly classified images it was the first to break}} from the
    ensemble's per-chunk records."""
    out: dict[str, dict[str, int]] = {}
    for rec in records:
        row = out.setdefault(rec["budget"], dict.fromkeys(rec["members"], 0))
        for k in rec["broken_by"].values():
            if k >= 0:
                row[rec["members"][k]] += 1
    return out


def _native_sentence(native: dict[str, Any] | None) -> str:
    """DICOM / NIfTI data: what [0, 1] and one 1/255 step are in the file's own units."""
    if not native:
        return ""
    c, w, unit = float(native["window_centre"]), float(native["window_width"]), str(native["unit"])
    return html.escape(f" Native units: [0, 1] is the window {c:g}/{w:g} {unit} (centre/width: {c - w / 2:g} to "
                       f"{c + w / 2:g} {unit}), so 1/255 is {w / 255:.3g} {unit}.")


def _native_budget(budget: str, native: dict[str, Any] | None) -> str:
    """' (12.5 HU)' after a k/255 budget, for DICOM / NIfTI data."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)/255", budget.strip())
    if not native or not match:
        return ""
    return f" ({float(match.group(1)) * float(native['window_width']) / 255:.3g} {native['unit']})"


def render(store: ResultStore, out: Path) -> Path:
    """Write out/report.html and out/results.json from the store: everything is read and both
    files are composed before either is written, so a damaged store changes nothing."""
    try:
        data = collect(store)
        html_text = page(store, data)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{store.path}: the results store is damaged ({exc})") from None
    atomic_write_json(out / "results.json", json_safe(data))
    atomic_write_bytes(out / "report.html", html_text.encode())
    return out / "report.html"


def _backdoor_section(bd: dict[str, Any], figure: tuple[str, bytes] | None) -> str:
    """Clean vs poisoned model, the detectors' TPR/FPR, and the retrained models."""
    poison, clean, bad = bd["poison"], bd["clean_model"], bd["poisoned_model"]
    rows = [["clean (same seed)", _pct(clean["test"]["accuracy"]), _pct(clean["backdoor"]["asr"]), "&ndash;"],
            [f"poisoned ({poison['n_poisoned']} of {poison['n_train']:,} images)", _pct(bad["test"]["accuracy"]),
             _pct(bad["backdoor"]["asr"]), "&ndash;"]]
    for name, r in (bd.get("retrained") or {}).items():
        rows.append([f"retrained without {html.escape(name)}'s flags", _pct(r["test"]["accuracy"]),
                     _pct(r["backdoor"]["asr"]), str(r.get("poisons_left", "&ndash;"))])
    parts = [f"<h2 id='backdoor'>Backdoor retraining</h2><p>{html.escape(poison['trigger'])}, "
             f"{html.escape(str(poison['mode']))} to <b>{html.escape(str(bd.get('target_name') or 'all-to-all'))}</b>"
             f", {poison['rate']:.1%} of the training set. ASR: triggered test images of other classes read as the "
             "target.</p>",
             _table(["model", "clean accuracy", "attack success", "poisons left"], rows)]
    det = bd.get("detection") or {}
    found = [[html.escape(k), _pct(v["tpr"]), _pct(v["fpr"]), _num(v["auroc"])] for k, v in det.items()
             if isinstance(v, dict) and "tpr" in v and "auroc" in v]
    if found:
        parts.append("<h3>Finding the poisoned training images</h3>"
                     + _table(["detector", "poisons flagged (TPR)", "clean flagged (FPR)", "AUROC"], found))
    if "strip-inference" in det:
        s = det["strip-inference"]
        parts.append(f"<p>STRIP at inference: {_pct(s['tpr'])} of triggered test images caught, {_pct(s['fpr'])} of "
                     "clean ones rejected.</p>")
    if "neural-cleanse" in det:
        nc = det["neural-cleanse"]
        infected = ", ".join(str(k) for k in nc["infected"]) or "none"
        parts.append(f"<p>Neural Cleanse: smallest reversed trigger for class {nc['smallest']} (the attack's target: "
                     f"{nc['true_target']}); labels flagged as infected (anomaly index &gt; 2): {infected}.</p>")
    if figure:
        parts.append(f"<div class='figs'>{img_tag(figure[1], 'trigger')}</div>")
    return "".join(parts)


def page(store: ResultStore, data: dict[str, Any]) -> str:
    """The whole report: one section per function below, in reading order."""
    meta = data["meta"]
    cfg = meta["config"] or {}
    parts = [_head(meta, cfg), _findings_section(data), _threat_section(data), _clean_section(data, cfg),
             _attack_section(data), _corruption_section(store, data), _flip_section(data),
             _figure_sections(store, data)]
    if data.get("defences"):
        parts.append(_defence_section(data["defences"]))
    if data.get("backdoor"):
        parts.append(_backdoor_section(data["backdoor"], store.artifact("backdoor-trigger")))
    parts.append(_cells_section(data.get("cells") or {}))
    parts.append(_sanity_section(store, data, cfg))
    return "\n".join(p for p in parts if p)


def cell_rows(cells: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per part of the audit (the first part of a unit's name): its units, the processes they ran
    in, their summed time and their retries."""
    out: dict[str, dict[str, Any]] = {}
    for name, c in cells.items():
        part = name.split("/")[0]
        row = out.setdefault(part, {"part": part, "units": 0, "where": set(), "wall_s": 0.0, "retries": 0,
                                    "executor": set()})
        row["units"] += 1
        row["where"].add(str(c.get("where")))
        row["executor"].add(str(c.get("executor")))
        row["wall_s"] += float(c.get("wall_s") or 0.0)
        row["retries"] += int(c.get("retries") or 0)
    return [{**r, "where": sorted(r["where"]), "executor": sorted(r["executor"])} for r in out.values()]


def _cells_section(cells: Mapping[str, Mapping[str, Any]]) -> str:
    """Where the units ran (this process or Ray workers), their time and their retries."""
    rows = cell_rows(cells)
    if not rows:
        return ""
    body = [[html.escape(r["part"]), str(r["units"]), html.escape(", ".join(r["executor"])),
             html.escape(", ".join(r["where"]) if len(r["where"]) <= 3 else f"{len(r['where'])} processes"),
             f"{r['wall_s']:.1f}", str(r["retries"])] for r in rows]
    return ("<h2 id='cells'>Where it ran</h2><p class='muted'>Each unit is one stage on one chunk of images, "
            "with its own random stream: it gives the same rows wherever it runs. Time is the units' own "
            "(summed over workers running side by side); a retry is a unit sent again after its worker was lost."
            "</p>" + _table(["part", "units", "run by", "processes (host:pid)", "unit time (s)", "retries"], body,
                            left=4))


def _head(meta: dict[str, Any], cfg: dict[str, Any]) -> str:
    env = meta["environment"] or {}
    return "\n".join([
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medfool audit: "
        f"{html.escape(str(meta['dataset']))}</title><style>{CSS}</style></head><body>",
        f"<h1>Robustness audit of {html.escape(Path(str(meta['model'])).name)} on "
        f"{html.escape(str(meta['dataset']))}</h1>",
        f"<p class='muted'>model {html.escape(str(meta['model']))} &middot; {len(meta['images'] or [])} "
        f"{html.escape(cfg.get('split', 'test'))} images audited (seeded sample, seed {meta['seed']}) &middot; "
        f"medfool {html.escape(str(env.get('medfool')))}, torch {html.escape(str(env.get('torch')))}. Success rates "
        "count only images the model classified correctly before the attack. Budgets: pixel values in [0, 1], "
        f"written as k/255. Images {'x'.join(str(v) for v in meta.get('image_shape') or [])} (C x H x W)."
        f"{_native_sentence(meta.get('native'))}</p>"])


def _findings_section(data: dict[str, Any]) -> str:
    return ("<h2 id='findings'>Findings</h2><ul class='findings'>"
            + "".join(f"<li>{html.escape(f)}</li>" for f in data["findings"]) + "</ul>")


def _threat_section(data: dict[str, Any]) -> str:
    parts: list[str] = []
    summaries = data["summaries"]
    stages_run = []
    for s in summaries:
        if s["stage"] not in stages_run:
            stages_run.append(s["stage"])
    budgets = {st: ", ".join(dict.fromkeys(s["budget"] for s in summaries if s["stage"] == st)) for st in stages_run}
    parts.append("<h2 id='threats'>Threat model</h2>" + _table(
        ["threat", "attacker knows", "attacker changes", "what may change", "budgets run"],
        [[html.escape(x) for x in THREATS.get(st, (st, "", "", ""))] + [html.escape(budgets[st])]
         for st in stages_run], left=5))
    if not data.get("backdoor"):
        parts.append("<p class='muted'>Training-time tampering (backdoors, poisoning) is not part of this run: it "
                     "needs a retrain of the model on tampered data (set <code>[backdoor] enabled = true</code>).</p>")
    return "\n".join(parts)


def _clean_section(data: dict[str, Any], cfg: dict[str, Any]) -> str:
    parts: list[str] = []
    clean = data["clean"]
    if clean:
        parts.append("<h2 id='clean'>Clean performance</h2>" + _table(
            ["split", "images", "accuracy", "AUC"],
            [[html.escape(cfg.get("split", "test")), f"{clean['n']:,}", _pct(clean["accuracy"]), _num(clean["auc"])]]))
    return "\n".join(parts)


def _attack_section(data: dict[str, Any]) -> str:
    parts: list[str] = []
    meta, summaries = data["meta"], data["summaries"]
    classes = meta["classes"]
    parts.append("<h2 id='attacks'>Attacks</h2>")
    curve = _curve_png(summaries, len(classes))
    if curve:
        parts.append(f"<div class='figs'>{img_tag(curve, 'robust accuracy vs epsilon')}</div>")
    shown = [s for s in summaries if s["stage"] != "corruption"]

    def lead(s: dict[str, Any]) -> list[str]:
        return [html.escape(s["stage"]), html.escape(s["attack"] + (f" ({s['role']})" if s.get("role") else "")),
                html.escape(s["budget"] + _native_budget(s["budget"], meta.get("native"))).replace(" ", "&nbsp;")]

    parts.append(breakdown_tables([([*lead(s), f"{s['n']} ({s['clean_correct']})", _pct(s["success_rate"])],
                                    s["robust_breakdown"]) for s in shown],
                                  ["stage", "attack", "budget", "images (correct)", "success"], left=3,
                                  label="robust accuracy"))
    parts.append("<p class='muted'><b>robust accuracy</b>: the share of all audited images still correctly "
                 "classified after the attack, with its 95 % interval (Wilson) below; <b>balanced</b>: the mean of the "
                 "per-class figures (the headline on an imbalanced sample); per class: the share still correct, "
                 "below it still correct / images and the interval; "
                 "<b>constant answer</b>: what answering the sample's largest class every time would keep at any "
                 "budget (its balanced accuracy is 1 / classes). <b>worst case</b>: the ensemble (AutoAttack's "
                 "protocol: APGD-CE, APGD-T, FAB-T and Square, each on the images no earlier one broke), the number "
                 "to sign; <b>naive</b>: single-loss fixed-step attacks, shown because they are what many evaluations "
                 "stop at; they overstate robustness on over-confident models.</p>")
    parts.append("<h3>Size, perceptibility and cost of the attacks</h3>" + _table(
        ["stage", "attack", "budget", "median L2", "median Linf", "median L0", "PSNR dB", "SSIM", "CIEDE2000",
         "queries / image", "gradients / image", "s / image"],
        [[*lead(s), _num(s["median_l2"]),
          "&ndash;" if math.isnan(s["median_linf_255"]) else f"{s['median_linf_255']:.1f}/255",
          _num(s["median_l0"], 0), _num(s["mean_psnr"], 1), _num(s["mean_ssim"]), _num(s["mean_ciede2000"], 2),
          _num(s["mean_queries"], 0), _num(s["mean_gradients"], 0), _num(s["time_per_image_s"], 3)]
         for s in shown], left=3))
    parts.append("<p class='muted'>Sizes and perceptibility (PSNR, SSIM, CIEDE2000 mean colour difference) are over "
                 "the successful adversarial images; queries and gradients over the correctly classified images "
                 "(those the success rate counts); time over all.</p>")
    members = data.get("ensemble_members") or {}
    if members:
        names = list(next(iter(members.values())))
        robust = {s["budget"]: s for s in summaries if s["stage"] == "whitebox" and s["attack"] == "ensemble"}
        parts.append("<h3>Which member of the ensemble broke each image</h3>" + _table(
            ["budget", *names, "still correct"],
            [[html.escape(b), *[str(row.get(m, 0)) for m in names],
              str(round(robust[b]["robust_accuracy"] * robust[b]["n"])) if b in robust else "&ndash;"]
             for b, row in sorted(members.items(), key=lambda kv: float(kv[0].split("/")[0]))]))
    return "\n".join(parts)


def _corruption_section(store: ResultStore, data: dict[str, Any]) -> str:
    parts: list[str] = []
    meta = data["meta"]
    corr = data.get("corruptions") or {}
    if corr:
        sev = sorted({k for row in corr.values() for k in row})
        parts.append("<h2 id='corruptions'>Natural variation</h2><p class='muted'>Accuracy on the audited images under "
                     "graded corruptions of the kind a scanner or an acquisition chain produces (after MedMNIST-C; "
                     "severity 1 mild to 5 severe), with no attacker: the yardstick for the adversarial numbers. "
                     "Blur radii are scaled from 224 px to the image's size.</p>" + _table(
                         ["corruption", *[f"severity {k}" for k in sev]],
                         [[html.escape(name), *[_pct(row.get(k)) for k in sev]] for name, row in corr.items()]))
        n_clean = sum(1 for r in data["rows"] if r["stage"] == "clean" and r["clean_correct"])
        parts.append(f"<p class='muted'>Without corruption: {n_clean} of {len(meta['images'] or [])} audited images "
                     f"correct ({_pct(n_clean / max(1, len(meta['images'] or [])))}).</p>")
        fig = store.artifact("corruptions-png")
        if fig:
            parts.append(f"<div class='figs'>{img_tag(fig[1], 'one tile under each corruption')}</div>")
    return "\n".join(parts)


def _flip_section(data: dict[str, Any]) -> str:
    parts: list[str] = []
    classes = data["meta"]["classes"]
    critical = set(data["meta"].get("critical") or [])
    if data["flip_matrices"]:
        parts.append("<h2 id='flips'>Clinical flip matrix</h2><p class='legend'>Counts of correctly classified images "
                     "by true class (rows) and the class the attack made the model read (columns). "
                     "<span class='missed'>critical &rarr; non-critical: a missed diagnosis</span>"
                     "<span class='alarm'>non-critical &rarr; critical: an unnecessary intervention</span></p>")
        if critical:
            parts.append("<p class='muted'>Critical classes (a miss is clinically dangerous): "
                         + html.escape(", ".join(classes[i] for i in sorted(critical))) + ".</p>")
        else:
            parts.append("<p class='muted'>The model names no critical classes, so no direction is highlighted.</p>")
        for fm in data["flip_matrices"]:
            parts.append(f"<h3>{html.escape(fm['attack'])} at {html.escape(fm['budget'])}</h3>"
                         + _flip_table(fm["matrix"], classes, critical))
    return "\n".join(parts)


def _figure_sections(store: ResultStore, data: dict[str, Any]) -> str:
    parts: list[str] = []
    meta = data["meta"]
    grids = store.artifacts("grid-")
    if grids:
        parts.append("<h2 id='examples'>Examples</h2><p class='muted'>original | adversarial | difference amplified "
                     "to full range; successful examples first.</p><div class='figs'>"
                     + "".join(img_tag(d, n) for n, _, d in grids) + "</div>")
    patch = store.artifact("patch-png")
    if patch:
        parts.append(f"<h2 id='patch'>Patch</h2><p>The universal patch (target: "
                     f"{html.escape(str(meta.get('patch_target_name')))}), crafted on training images and pasted on "
                     f"held-out ones:</p><div class='figs'>{img_tag(patch[1], 'adversarial patch')}</div>")
    maps = [(n, d) for n, _, d in store.artifacts("map-") if n.endswith("-png")]
    if maps:
        parts.append("<h2 id='maps'>One-pixel vulnerability maps</h2><p class='muted'>For every pixel, the largest "
                     "drop in the true class's probability when that pixel alone takes one of the colours tried, and "
                     "where that alone flips the prediction.</p><div class='figs'>"
                     + "".join(img_tag(d, n) for n, d in maps) + "</div>")
    return "\n".join(parts)


def _sanity_section(store: ResultStore, data: dict[str, Any], cfg: dict[str, Any]) -> str:
    parts: list[str] = []
    meta = data["meta"]
    parts.append("<h2 id='sanity'>Sanity checks</h2>" + _table(
        ["check", "result", "detail"],
        [[html.escape(c["check"]), f"<span class='{c['status']}'>{c['status']}</span>", html.escape(c["detail"])]
         for c in data["sanity"]], left=3))
    skipped = meta.get("skipped") or []
    if skipped:
        parts.append("<p class='muted'>Not run: " + html.escape("; ".join(skipped)) + "</p>")
    parts.append("<h2 id='repro'>Reproduce</h2><p class='muted'>Configuration, seed and versions are in results.json; "
                 "every row is in audit.sqlite. Re-render with <code>medfool report "
                 f"{html.escape(str(store.path.parent))}</code>.</p><pre>"
                 + html.escape(json.dumps({"config": cfg, "environment": meta["environment"]}, indent=1))
                 + "</pre></body></html>")
    return "\n".join(parts)
