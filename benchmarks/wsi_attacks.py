"""Slide-level attacks on mosaic slides of LC25000 lung test tiles: one-, 3- and 10-pixel
differential evolution guided by the aggregator's own signal against a uniform-tile search, a
patch on one tile and PGD on 0.1 / 1 / 10 % of the tiles; every success written back into level
0 of a copy of the slide (lossless and JPEG at the source quality, lower levels stale) and read
again through the whole pipeline; pyramid consistency of the clean and attacked files.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/wsi_attacks.py --slides runs/slides-test
        --model runs/lung64-s0 [--aggregator max] [--json OUT]
        python benchmarks/wsi_attacks.py --slides runs/slides-test --model runs/mil-s0   (attention MIL)
        python benchmarks/wsi_attacks.py --render RESULTS.json
        (writes benchmarks/results/wsi_attacks_AGGREGATOR.json unless --json names another file)

Slides come from ``medfool wsi build -d lc25000_lung --size 64 --split test`` (4,096 px, JPEG q90),
the tile model from ``medfool train -d lc25000_lung --size 64`` (defaults). A query is one slide
answer (the aggregator's output for the whole slide with one tile changed). Per tile the DE runs
a population of 100 for up to 10 generations (1,100 queries); the guided search tries at most
``--guided-tiles`` tiles, the uniform one ``--uniform-tiles``. "At equal success": the per-slide
query budget each search needs to fool the share of slides the weaker of the two reaches.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medfool.report.slides_html import consistency_auc
from medfool.runs.wsi import load_pipeline, slide_files, tissue_tiles
from medfool.runs.wsi_attack import AttackSpec, attack_tiles, source_quality, write_and_check
from medfool.utils.stats import wilson
from medfool.wsi.forensics import consistency_scores
from medfool.wsi.scorer import SlideScorer
from medfool.wsi.slide import open_slide
from record import default_path, write_results

PIXELS = (1, 3, 10)
FRACTIONS = (0.001, 0.01, 0.1)


def budget_for(queries: list[float], share: float) -> float:
    """The per-slide query budget at which ``share`` of the slides are fooled (inf: never)."""
    need = math.ceil(share * len(queries) - 1e-9)
    if need == 0:
        return 0.0
    ordered = sorted(queries)
    return ordered[need - 1] if need <= len(ordered) else math.inf


def _attacks(args: argparse.Namespace) -> list[AttackSpec]:
    specs = []
    for k in PIXELS if not args.white_box_only else ():
        for order, tiles in (("guided", args.guided_tiles), ("uniform", args.uniform_tiles)):
            specs.append(AttackSpec("pixels", pixels=k, order=order, max_tiles=tiles, population=args.population,
                                    generations=args.generations, seed=args.seed))
    specs.append(AttackSpec("patch", patch=16, seed=args.seed))
    specs += [AttackSpec("fraction", fraction=f, seed=args.seed) for f in FRACTIONS]
    return specs


def run(args: argparse.Namespace, partial: Path | None = None) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    pipe = load_pipeline(args.model, args.aggregator, 0.5, "cpu")
    threshold = pipe.threshold
    pairs = slide_files(Path(args.slides))
    if args.per_class:
        pairs = [pr for label in ("benign", "malignant")
                 for pr in [q for q in pairs if q[1] == label][: args.per_class]]
    specs = _attacks(args)
    slides: list[dict[str, Any]] = []
    scratch = Path(tempfile.mkdtemp(prefix="wsi-bench-"))
    for path, label in pairs:
        t0 = time.perf_counter()
        with open_slide(path) as s:
            grid, tiles = tissue_tiles(s, pipe.model.meta.input_shape[-1], pipe.min_tissue)
            consistency = consistency_scores(s)
        scorer = SlideScorer(pipe.aggregator, pipe.model, tiles, pipe.mil)
        p = scorer.probability()
        read_as = "malignant" if p >= threshold else "benign"
        above = int((scorer.scores >= threshold).sum()) if pipe.aggregator == "max" else None
        rec: dict[str, Any] = {"slide": path.name, "label": label, "probability": p, "read_as": read_as,
                               "tiles": len(grid), "tiles_above_threshold": above, "consistency": consistency,
                               "attacks": []}
        if read_as == label:
            for spec in specs:
                t1 = time.perf_counter()
                result = attack_tiles(scorer, tiles, grid, spec, threshold)
                entry = {"name": spec.name, "kind": spec.kind, "pixels": spec.pixels, "order": spec.order,
                         "fraction": spec.fraction, **result.summary(), "seconds": time.perf_counter() - t1}
                if result.success:
                    entry["written"], _ = write_and_check(path, scratch, result, pipe, quality=source_quality(path),
                                                          keep=False)
                rec["attacks"].append(entry)
        slides.append(rec)
        if partial is not None:  # what is done so far, for a run cut short
            partial.write_text(json.dumps({"config": vars(args), "slides": slides}, indent=1))
        print(f"{path.name}: {label}, read {read_as} (p = {p:.3f}, {len(grid)} tiles"
              f"{f', {above} above {threshold:.3f}' if above is not None else ''}); "
              f"fooled by {[a['name'] for a in rec['attacks'] if a['success']]} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return {"config": {**vars(args), "threshold": threshold, "aggregator": pipe.aggregator}, "slides": slides}


def _share(k: int, n: int) -> str:
    if not n:
        return "-"
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({100 * k / n:.0f} %, 95 % CI {100 * lo:.0f}-{100 * hi:.0f})"


def _rows(results: dict[str, Any], direction: str) -> list[str]:
    """Markdown rows: per attack, fooled share, from the files, and the cost of a success."""
    attacked = [r for r in results["slides"] if r["attacks"] and r["attacks"][0]["direction"] == direction]
    names = [a["name"] for a in attacked[0]["attacks"]] if attacked else []
    out = []
    for name in names:
        every = [next(a for a in r["attacks"] if a["name"] == name) for r in attacked]
        items = [a for a in every if not a["impossible"]]
        won = [a for a in items if a["success"]]
        lossless = sum(a["written"]["lossless"]["fooled"] for a in won)
        jpeg = sum(a["written"]["jpeg"]["fooled"] for a in won)
        cost = [a["queries"] or a["gradients"] for a in won]
        med = f"{statistics.median(cost):,.0f}" if cost else "-"
        unit = "gradients" if items and items[0]["kind"] != "pixels" else "queries"
        px = f"{statistics.median([a['pixels_changed'] for a in won]):,.0f}" if won else "-"
        out_of_reach = len(every) - len(items)
        note = f" ({out_of_reach} out of reach)" if out_of_reach else ""
        lost = [a for a in items if not a["success"]]
        best = f"{statistics.median([a['probability_after'] for a in lost]):.3f}" if lost else "-"
        spent = f"{statistics.median([a['queries'] or a['gradients'] for a in lost]):,.0f}" if lost else "-"
        out.append(f"| {name} | {_share(len(won), len(items))}{note} | {lossless}/{len(won)} | {jpeg}/{len(won)} | "
                   f"{px} | {med} {unit} | {best} after {spent} |")
    return out


def _equal_success(results: dict[str, Any]) -> list[str]:
    """Per k: the per-slide query budget with which guided search fools the share of slides it
    fools, and what uniform search needs for that share (when it never gets there, more than
    the most it spent on one slide: a lower bound)."""
    out = []
    for direction in ("benign->malignant", "malignant->benign"):
        attacked = [r for r in results["slides"] if r["attacks"] and r["attacks"][0]["direction"] == direction]
        for k in PIXELS:
            q: dict[str, list[float]] = {}
            spent: dict[str, float] = {}
            for order in ("guided", "uniform"):
                items = [a for r in attacked for a in r["attacks"] if a["name"] == f"{k}-pixel DE ({order})"]
                items = [a for a in items if not a["impossible"]]
                q[order] = [a["queries"] if a["success"] else math.inf for a in items]
                spent[order] = max((a["queries"] for a in items), default=0)
            if not q["guided"]:
                continue
            share = sum(math.isfinite(v) for v in q["guided"]) / len(q["guided"])
            if share == 0:
                out.append(f"| {direction} | {k} | 0 of {len(q['guided'])} | - | - | - |")
                continue
            g, u = budget_for(q["guided"], share), budget_for(q["uniform"], share)
            u_txt, ratio = (f"{u:,.0f}", f"{u / g:.1f}x") if math.isfinite(u) else \
                (f"> {spent['uniform']:,.0f} (never)", f"> {spent['uniform'] / g:.1f}x")
            out.append(f"| {direction} | {k} | {share:.0%} of {len(q['guided'])} | {g:,.0f} | {u_txt} | {ratio} |")
    return out


def render(results: dict[str, Any]) -> str:
    slides = results["slides"]
    cfg = results["config"]
    labelled = [r for r in slides if r["label"]]
    right = sum(r["read_as"] == r["label"] for r in labelled)
    lines = [f"Aggregator **{cfg['aggregator']}** (`{cfg['model']}`, threshold {cfg['threshold']:.3f}); "
             f"{len(slides)} slides of "
             f"`{cfg['slides']}`; clean slide accuracy {_share(right, len(labelled))} "
             f"(benign {sum(r['read_as'] == r['label'] == 'benign' for r in labelled)}/"
             f"{sum(r['label'] == 'benign' for r in labelled)}, malignant "
             f"{sum(r['read_as'] == r['label'] == 'malignant' for r in labelled)}/"
             f"{sum(r['label'] == 'malignant' for r in labelled)}); attacks on the slides read correctly.", ""]
    above = [r["tiles_above_threshold"] for r in slides if r["label"] == "malignant" and r["read_as"] == "malignant"
             and r["tiles_above_threshold"] is not None]
    if above:
        lines += [f"Malignant slides read correctly hold {min(above)}-{max(above)} tiles above the threshold (median "
                  f"{statistics.median(above):.0f}).", ""]
    for direction in ("benign->malignant", "malignant->benign"):
        rows = _rows(results, direction)
        if rows:
            lines += [f"**{direction}**", "", "| attack | fooled | from the lossless file | survives JPEG q90 | "
                      "median pixels | median cost | failures: median p reached, after |",
                      "|---|---|---|---|---|---|---|", *rows, ""]
    eq = _equal_success(results)
    if eq:
        lines += ["Guided against uniform tile choice at equal success (the per-slide query budget that fools the "
                  "share of slides guided search fools):",
                  "", "| direction | pixels | share fooled (guided) | guided | uniform | uniform / guided |",
                  "|---|---|---|---|---|---|", *eq, ""]
    for copy in ("lossless", "jpeg"):
        for tile in ("1", "32"):
            auc, n_att, n_clean = consistency_auc(slides, copy, tile)
            clean = [r["consistency"][tile] for r in slides]
            att = [a["written"][copy]["consistency"][tile] for r in slides for a in r["attacks"] if a["success"]]
            lines.append(f"Pyramid consistency over {tile} px, attacked {copy} copies (lower levels stale) against "
                         f"clean files: ROC-AUC {auc:.3f} ({n_att} attacked, {n_clean} clean; clean scores "
                         f"{min(clean):.1f}-{max(clean):.1f}, attacked {min(att, default=math.nan):.1f}-"
                         f"{max(att, default=math.nan):.1f}).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slides", default="runs/slides-test")
    ap.add_argument("--model", default="runs/lung64-s0")
    ap.add_argument("--aggregator", default="max", choices=("max", "mean"))
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--generations", type=int, default=10)
    ap.add_argument("--guided-tiles", type=int, default=20)
    ap.add_argument("--uniform-tiles", type=int, default=60)
    ap.add_argument("--per-class", type=int, default=None, help="only the first N benign and N malignant slides")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--white-box-only", action="store_true", help="only the patch and PGD (e.g. for the forensics "
                    "on lossless slides)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--render", default=None, metavar="RESULTS.json")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    name = f"wsi_attacks_{args.aggregator}"
    partial = (Path(args.json) if args.json else default_path(name)).with_suffix(".partial.json")
    results = run(args, partial)
    print(render(results))
    write_results(name, results, args.json)
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
