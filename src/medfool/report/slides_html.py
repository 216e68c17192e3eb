"""The slide audit's report: one self-contained HTML page (figures embedded, no scripts) and
results.json, rendered from the per-slide records ``medfool wsi audit`` wrote (runs no model)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import torch

from medfool.models.metrics import binary_auc
from medfool.report.html import CSS, img_tag
from medfool.utils.io import atomic_write_bytes, atomic_write_json, json_safe
from medfool.utils.stats import wilson

__all__ = ["consistency_auc", "render_slide_audit", "summary_rows"]


def _img(path: Path, alt: str) -> str:
    return img_tag(path.read_bytes() if path.is_file() else b"", alt)


def _share(k: int, n: int) -> str:
    if n == 0:
        return "&ndash;"
    lo, hi = wilson(k, n)
    return f'{k}/{n} = {100 * k / n:.0f} % <span class="ci">[{100 * lo:.0f}, {100 * hi:.0f}]</span>'


def _median(values: list[float]) -> str:
    return f"{sorted(values)[len(values) // 2]:,.0f}" if values else "&ndash;"


def summary_rows(slides: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per attack and direction: slides attacked, fooled in memory, fooled from the lossless and
    JPEG files, and the pixels, queries and gradients of each success."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in slides:
        for a in rec["attacks"]:
            groups.setdefault((a["name"], a["direction"]), []).append(a)
    rows = []
    for (name, direction), every in groups.items():
        items = [a for a in every if not a.get("impossible")]
        won = [a for a in items if a["success"]]
        rows.append({"attack": name, "direction": direction, "attacked": len(items), "fooled": len(won),
                     "out_of_reach": len(every) - len(items),
                     "fooled_lossless": sum(a["written"]["lossless"]["fooled"] for a in won),
                     "fooled_jpeg": sum(a["written"]["jpeg"]["fooled"] for a in won),
                     "jpeg_quality": next((a["written"]["jpeg"]["quality"] for a in won), None),
                     "pixels": [a["pixels_changed"] for a in won], "queries": [a["queries"] for a in won],
                     "gradients": [a["gradients"] for a in won]})
    return rows


def consistency_auc(slides: list[dict[str, Any]], copy: str, tile: str = "1") -> tuple[float, int, int]:
    """ROC-AUC of the pyramid-consistency score over ``tile`` px tiles, attacked copies
    (``copy``: lossless or jpeg, lower levels stale) against the clean files, with the two counts."""
    clean = [rec["consistency"][tile] for rec in slides if "consistency" in rec]
    attacked = [a["written"][copy]["consistency"][tile] for rec in slides for a in rec["attacks"] if a["success"]]
    if not clean or not attacked:
        return math.nan, len(attacked), len(clean)
    scores = torch.tensor(clean + attacked)
    positive = torch.tensor([False] * len(clean) + [True] * len(attacked))
    return binary_auc(scores, positive), len(attacked), len(clean)


def _summary_table(slides: list[dict[str, Any]]) -> str:
    head = ("<tr><th class=l>attack</th><th class=l>direction</th><th>fooled (in memory)</th>"
            "<th>fooled, read from the lossless file</th><th>survives JPEG at the source quality</th>"
            "<th>median pixels changed</th><th>median queries</th><th>median gradients</th></tr>")
    body = []
    for r in summary_rows(slides):
        q = f" (q{r['jpeg_quality']})" if r["jpeg_quality"] else ""
        reach = f" <span class=muted>({r['out_of_reach']} out of reach)</span>" if r["out_of_reach"] else ""
        body.append(f"<tr><td class=l>{html.escape(r['attack'])}</td><td class=l>{r['direction']}</td>"
                    f"<td>{_share(r['fooled'], r['attacked'])}{reach}</td>"
                    f"<td>{_share(r['fooled_lossless'], r['fooled'])}</td>"
                    f"<td>{_share(r['fooled_jpeg'], r['fooled'])}{q}</td>"
                    f"<td>{_median(r['pixels'])}</td><td>{_median(r['queries'])}</td>"
                    f"<td>{_median(r['gradients'])}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _clean_section(slides: list[dict[str, Any]], threshold: float) -> str:
    labelled = [r for r in slides if r["label"] in ("benign", "malignant") and "read_as" in r]
    lines = [f"<p>{len(slides)} slides; a slide reads malignant at p &ge; {threshold}.</p>"]
    if labelled:
        right = {c: sum(r["read_as"] == c for r in labelled if r["label"] == c) for c in ("benign", "malignant")}
        total = {c: sum(r["label"] == c for r in labelled) for c in ("benign", "malignant")}
        per = [right[c] / total[c] for c in total if total[c]]
        lines.append(f"<p>Clean slide accuracy {_share(sum(right.values()), len(labelled))}; benign "
                     f"{_share(right['benign'], total['benign'])}, malignant "
                     f"{_share(right['malignant'], total['malignant'])}; balanced "
                     f"{100 * sum(per) / len(per):.0f} %; a constant answer scores "
                     f"{100 * max(total.values()) / len(labelled):.0f} %. Attacks run only on slides read "
                     "correctly.</p>")
    return "<h2>Clean reading</h2>" + "".join(lines)


def _forensic_section(slides: list[dict[str, Any]]) -> str:
    rows = []
    for copy in ("lossless", "jpeg"):
        cells = []
        for tile in ("1", "32"):
            auc, n_att, n_clean = consistency_auc(slides, copy, tile)
            cells.append(f"<td>{'&ndash;' if math.isnan(auc) else f'{auc:.3f}'}</td>")
        rows.append(f"<tr><td class=l>{copy} copy, lower levels stale</td><td>{n_att}</td><td>{n_clean}</td>"
                    f"{''.join(cells)}</tr>")
    return ("<h2>Forensics: pyramid consistency</h2><p>Each level against the 2x box-downsampled level above it: "
            "the largest mean difference (0&ndash;255) over single pixels and over 32 px tiles. An edit of level 0 "
            "leaves the lower levels stale; an attacker who rewrites every level leaves a consistent pyramid and "
            "this check sees nothing.</p><table><tr><th class=l>attacked files</th><th>attacked</th><th>clean</th>"
            f"<th>ROC-AUC, pixels</th><th>ROC-AUC, 32 px tiles</th></tr>{''.join(rows)}</table>")


def _slide_section(rec: dict[str, Any], figures: Path) -> str:
    if "probability" not in rec:
        return f"<h3>{html.escape(rec['slide'])}</h3><p class=muted>skipped: {html.escape(rec['skipped'])}</p>"
    parts = [f"<h3>{html.escape(rec['slide'])}: {html.escape(str(rec['label']))}, read {rec['read_as']} "
             f"(p = {rec['probability']:.3f}, {rec['tiles']:,} tiles)</h3>"]
    if rec.get("skipped"):
        parts.append(f"<p class=muted>{html.escape(rec['skipped'])}</p>")
    imgs = [_img(figures / rec["figure"], "before")] if rec.get("figure") else []
    items = []
    for a in rec["attacks"]:
        if a["success"]:
            w = a["written"]
            items.append(f"<li>{html.escape(a['name'])}: fooled with {a['pixels_changed']:,} pixels in "
                         f"{len(a['tiles_changed'])} tile(s); from the files: lossless p = "
                         f"{w['lossless']['probability']:.3f}, JPEG p = {w['jpeg']['probability']:.3f}</li>")
            imgs.append(_img(figures / a["figure"], a["name"]))
        elif a.get("impossible"):
            items.append(f"<li>{html.escape(a['name'])}: out of reach, not tried ({html.escape(a['impossible'])})"
                         "</li>")
        else:
            items.append(f"<li>{html.escape(a['name'])}: not fooled (p reached {a['probability_after']:.3f})</li>")
    return "".join(parts) + f"<ul>{''.join(items)}</ul><div class=figs>{''.join(imgs)}</div>"


def render_slide_audit(out: Path, results: dict[str, Any]) -> Path:
    """OUT/results.json and OUT/report.html from the audit's records."""
    cfg, slides = results["config"], results["slides"]
    figures = out / "figures"
    body = [f"<h1>medfool slide audit</h1><p class=muted>{html.escape(cfg['slides'])} &middot; model "
            f"{html.escape(cfg['model'])} &middot; aggregator {cfg['aggregator']} &middot; seed {cfg['seed']}</p>",
            _clean_section(slides, cfg["threshold"]),
            "<h2>Threats</h2><p>Black-box pixel searches count one query per slide answer; white-box attacks "
            "count gradients through the aggregator. Every success is written into level 0 of a copy of the "
            "file and read back through the whole pipeline.</p>", _summary_table(slides),
            _forensic_section(slides), "<h2>Slides</h2>",
            *(_slide_section(rec, figures) for rec in slides)]
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>medfool slide audit</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    summary = {**results, "summary": summary_rows(slides),
               "consistency_auc": {c: consistency_auc(slides, c)[0] for c in ("lossless", "jpeg")}}
    atomic_write_json(out / "results.json", json_safe(summary))
    atomic_write_bytes(out / "report.html", page.encode())
    return out / "report.html"
