"""Black-box attacks: Square against ART and torchattacks, HopSkipJump against white-box C&W,
fooling images, and the ONNX path.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/blackbox.py --model CKPT [--dataset pathmnist]
        [--n 64] [--eps 8] [--queries 1000] [--hsj-n 32] [--hsj-queries 1000 3000 10000]
        [--fooling-queries 400000] [--out DIR] [--parts square square-seeds square-p-init hsj fooling onnx]
        [--seeds 0 1 2] [--json OUT]

One process, one model, the same correctly classified test tiles for every contender. Every
model evaluation is counted by a wrapper around the model (one image = one query).

Prints
  (a) Square (Linf, eps/255, p_init 0.05, margin loss): success, queries and seconds per image
      for medfool, torchattacks at the same query budget, and ART at the same number of
      iterations (ART queries the model about three times per iteration) and at about the
      same number of queries; the success difference in points and the time ratios; and
      medfool's queries per second over the model's plain forward throughput (the floor);
  (a2) square-seeds: medfool's Square and torchattacks' at the same query budget, one run per
      seed (--seeds), and the medians;
  (a3) square-p-init: medfool's Square at p_init 0.05, 0.1, 0.3 and 0.8 beside torchattacks'
      default (0.8, AutoAttack's), medians over --seeds;
  (b) HopSkipJump (labels only) at several budgets: median L2 over white-box C&W's on the same
      images (target <= 1.5), success, seconds per image; Boundary (labels) and SimBA (scores)
      at the largest budget beside it;
  (c) fooling images (direct and CPPN encodings): classes reaching >= 99 % confidence;
  (d) ONNX: the same Square run on the exported model: identical success, time ratio.
Writes the figures to OUT, by default benchmarks/results/blackbox_DATASET[_PARTS].json (PARTS
only where --parts is not the default).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from counting import Counting  # benchmarks/counting.py (the script folder is on sys.path)
from medfool.attacks import get_attack
from medfool.attacks.blackbox.fooling import FoolingConfig, fooling_images
from medfool.data import load_dataset
from medfool.models import Classifier, load_classifier
from medfool.models.predict import OnnxModel, export_onnx, from_callable, from_classifier
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)

PARTS = ["square", "hsj", "fooling", "onnx"]


def fooled(model: Classifier, x_adv: torch.Tensor | np.ndarray, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.predict(torch.as_tensor(x_adv, dtype=torch.float32)) != y).float().mean())


def part_square(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, q: int) -> dict[str, object]:
    n = x.shape[0]
    counting = Counting(model)
    print(f"\n(a) Square, Linf eps {eps * 255:g}/255, {n} correctly classified tiles, budget {q} queries per image")
    rows = []
    pm = from_callable(lambda t: model.probabilities(t), class_names=model.class_names,
                       input_shape=model.meta.input_shape)
    counted = from_callable(lambda t: torch.softmax(counting(t), 1), class_names=model.class_names,
                            input_shape=model.meta.input_shape)
    start = time.perf_counter()
    r = get_attack("square", eps=eps, queries=q, p_init=0.05)(counted, x, y, seed=0)
    t = time.perf_counter() - start
    rows.append(("medfool", r.success_rate, counting.rows / n, t / n))
    ours = rows[0]
    counting.rows = 0
    start = time.perf_counter()
    r = get_attack("square", eps=eps, queries=q, p_init=0.05, proposals="batch")(counted, x, y, seed=0)
    rows.append(("medfool, one proposal per batch (as the peers)", r.success_rate, counting.rows / n,
                 (time.perf_counter() - start) / n))
    try:
        import torchattacks

        counting.rows = 0
        ta = torchattacks.Square(counting, norm="Linf", eps=eps, n_queries=q - 2, p_init=0.05, loss="margin",
                                 n_restarts=1, seed=0)
        start = time.perf_counter()
        adv = ta(x, y)
        rows.append(("torchattacks Square (same queries)", fooled(model, adv, y), counting.rows / n,
                     (time.perf_counter() - start) / n))
    except ImportError:
        print("  torchattacks not installed: pip install --no-deps torchattacks")
    try:
        from art.attacks.evasion import SquareAttack
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=counting, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=model.num_classes, clip_values=(0.0, 1.0))
        for label, iters in (("ART SquareAttack (same iterations)", q - 2),
                             ("ART SquareAttack (about the same queries)", max(1, (q - 2) // 3))):
            counting.rows = 0
            art = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=iters, p_init=0.05, nb_restarts=1,
                               batch_size=n, verbose=False)
            np.random.seed(0)
            start = time.perf_counter()
            adv = art.generate(x.numpy(), y=y.numpy())
            rows.append((label, fooled(model, adv, y), counting.rows / n, (time.perf_counter() - start) / n))
    except ImportError:
        print("  ART not installed: pip install adversarial-robustness-toolbox packaging")
    print(f"  {'contender':<44} {'success':>8} {'queries/img':>12} {'s/img':>8}  success - medfool  time / medfool")
    for name, s, qs, ts in rows:
        print(f"  {name:<44} {s:8.3f} {qs:12.0f} {ts:8.4f}  {100 * (s - ours[1]):+14.1f} pt  {ts / ours[3]:13.2f}")
    # the floor: the model's own forward throughput on batches of the active size
    with torch.no_grad():
        model(x)
        reps, start = 20, time.perf_counter()
        for _ in range(reps):
            pm.predict(x)
        per_query = (time.perf_counter() - start) / (reps * n)
    print(f"  floor: the model answers {1 / per_query:,.0f} queries/s on batches of {n}; medfool Square spent "
          f"{ours[3] / ours[2] * 1e3:.3f} ms per query = {ours[3] / ours[2] / per_query:.2f} x the floor "
          "(later iterations run on the few images still resisting: smaller batches)")
    return {"eps_255": eps * 255, "n": n, "queries_budget": q,
            "rows": [{"contender": name, "success": s, "queries_per_image": qs, "s_per_image": ts,
                      "success_minus_medfool_pts": 100 * (s - ours[1]), "time_over_medfool": ts / ours[3]}
                     for name, s, qs, ts in rows],
            "floor_queries_per_s": 1 / per_query, "medfool_ms_per_query": ours[3] / ours[2] * 1e3,
            "medfool_over_floor": ours[3] / ours[2] / per_query}


def part_square_seeds(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, q: int,
                      seeds: list[int]) -> dict[str, object]:
    """medfool's Square against torchattacks' at equal queries, one row per seed and the medians."""
    import statistics

    import torchattacks

    print(f"\n(a2) Square vs torchattacks Square, Linf {eps * 255:g}/255, {q} queries, {x.shape[0]} correctly "
          f"classified tiles, seeds {seeds}")
    ours, theirs = [], []
    for seed in seeds:
        r = get_attack("square", eps=eps, queries=q, p_init=0.05)(model, x, y, seed=seed)
        ta = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=q - 2, p_init=0.05, loss="margin",
                                 n_restarts=1, seed=seed)
        ours.append(r.success_rate)
        theirs.append(fooled(model, ta(x, y), y))
        print(f"  seed {seed}: medfool {ours[-1]:.3f}  torchattacks {theirs[-1]:.3f}")
    print(f"  median: medfool {statistics.median(ours):.3f}  torchattacks {statistics.median(theirs):.3f}  "
          f"difference {100 * (statistics.median(ours) - statistics.median(theirs)):+.1f} pt")
    return {"eps_255": eps * 255, "n": x.shape[0], "queries_budget": q, "seeds": seeds,
            "success_medfool": ours, "success_torchattacks": theirs,
            "median_success_medfool": statistics.median(ours), "median_success_torchattacks": statistics.median(theirs),
            "difference_pts": 100 * (statistics.median(ours) - statistics.median(theirs))}


def part_square_p_init(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, q: int,
                       seeds: list[int]) -> dict[str, object]:
    """medfool's Square at several initial window sizes (``p_init``) beside torchattacks' default
    (p_init 0.8, AutoAttack's Linf setting) at equal queries, medians over seeds: which start
    makes Square, every defence's masking check, at least as strong as the peers'."""
    import statistics

    import torchattacks

    print(f"\n(a3) Square's initial window, Linf {eps * 255:g}/255, {q} queries, {x.shape[0]} correctly classified "
          f"tiles of {x.shape[-1]} px, seeds {seeds}")
    rows: list[dict[str, object]] = []
    for p_init in (0.05, 0.1, 0.3, 0.8):
        rates = [get_attack("square", eps=eps, queries=q, p_init=p_init)(model, x, y, seed=s).success_rate
                 for s in seeds]
        rows.append({"contender": "medfool", "p_init": p_init, "success": rates,
                     "median_success": statistics.median(rates)})
        print(f"  medfool p_init {p_init:<4g}: median success {statistics.median(rates):.3f} "
              f"({' '.join(f'{r:.3f}' for r in rates)})")
    rates = [fooled(model, torchattacks.Square(model, norm="Linf", eps=eps, n_queries=q - 2, n_restarts=1,
                                                seed=s)(x, y), y) for s in seeds]
    print(f"  torchattacks default (p_init 0.8): median success {statistics.median(rates):.3f} "
          f"({' '.join(f'{r:.3f}' for r in rates)})")
    rows.append({"contender": "torchattacks default", "p_init": 0.8, "success": rates,
                 "median_success": statistics.median(rates)})
    return {"eps_255": eps * 255, "n": x.shape[0], "size_px": x.shape[-1], "queries_budget": q, "seeds": seeds,
            "rows": rows}


def part_hsj(model: Classifier, x: torch.Tensor, y: torch.Tensor, budgets: list[int]) -> dict[str, object]:
    n = x.shape[0]
    print(f"\n(b) HopSkipJump (labels only) vs white-box C&W (L2), {n} correctly classified tiles")
    start = time.perf_counter()
    cw = get_attack("cw")(model, x, y, seed=0)
    cw_t = (time.perf_counter() - start) / n
    print(f"  C&W: success {cw.success_rate:.3f}, median L2 {float(cw.l2[cw.success].median()):.3f}, "
          f"{cw_t:.3f} s/img")
    out: dict[str, object] = {"n": n, "cw": {"success": cw.success_rate, "median_l2": float(cw.l2[cw.success].median()),
                                             "s_per_image": cw_t}}
    hsj: list[dict[str, object]] = []
    others: list[dict[str, object]] = []
    labels = from_classifier(model, "labels")
    for q in budgets:
        start = time.perf_counter()
        r = get_attack("hsj", queries=q)(labels, x, y, seed=0)
        t = (time.perf_counter() - start) / n
        both = r.success & cw.success
        ratio = float(r.l2[both].median()) / float(cw.l2[both].median())
        print(f"  HSJ {q:>6} queries: success {r.success_rate:.3f}, median L2 {float(r.l2[both].median()):.3f} "
              f"= {ratio:.2f} x C&W's (target <= 1.5), mean queries {float(r.queries.float().mean()):.0f}, "
              f"{t:.2f} s/img")
        hsj.append({"queries_budget": q, "success": r.success_rate, "median_l2": float(r.l2[both].median()),
                    "l2_over_cw": ratio, "mean_queries": float(r.queries.float().mean()), "s_per_image": t})
    probs = from_classifier(model)
    for name, attack, pm in (("Boundary", get_attack("boundary", queries=budgets[-1]), labels),
                             ("SimBA-DCT", get_attack("simba", queries=budgets[-1]), probs),
                             ("SimBA-pixel", get_attack("simba", basis="pixel", queries=budgets[-1]), probs)):
        start = time.perf_counter()
        r = attack(pm, x, y, seed=0)
        t = (time.perf_counter() - start) / n
        both = r.success & cw.success
        ratio = float(r.l2[both].median()) / float(cw.l2[both].median()) if bool(both.any()) else float("nan")
        print(f"  {name} (budget {budgets[-1]}): success {r.success_rate:.3f}, median L2 "
              f"{float(r.l2[both].median()):.3f} = {ratio:.2f} x C&W's, mean queries "
              f"{float(r.queries.float().mean()):.0f}, {t:.2f} s/img")
        others.append({"attack": name, "queries_budget": budgets[-1], "success": r.success_rate,
                       "median_l2": float(r.l2[both].median()), "l2_over_cw": ratio,
                       "mean_queries": float(r.queries.float().mean()), "s_per_image": t})
    return out | {"hsj": hsj, "others": others}


def part_fooling(model: Classifier, queries: int, out: Path | None, dataset: str) -> dict[str, object]:
    from medfool.report.grid import class_grid

    print(f"\n(c) fooling images, at most {queries:,} queries in all per encoding")
    found: dict[str, object] = {"queries_budget": queries}
    for enc in ("direct", "cppn"):
        r = fooling_images(from_classifier(model), FoolingConfig(encoding=enc), torch.Generator().manual_seed(0),
                           queries=queries)
        best = r.confidence[:, 0].tolist()
        reached = sum(b >= 0.99 for b in best)
        print(f"  {enc:<7} {reached} of {len(best)} classes >= 0.99 ({r.queries:,} queries, {r.generations_run} "
              f"generations, {r.wall_s:.0f} s): " + ", ".join(f"{c} {b:.4f}" for c, b in
                                                            zip(model.class_names, best, strict=True)))
        found[enc] = {"classes_reaching_0.99": reached, "classes": len(best), "queries": r.queries,
                      "generations": r.generations_run, "wall_s": r.wall_s,
                      "best_confidence": dict(zip(model.class_names, best, strict=True))}
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            caps = [(f"{model.class_names[i][:18]} {float(r.confidence[i, j]):.4f}",) for i in range(len(best))
                    for j in (0,)]
            class_grid(out / f"fooling_{enc}.png", [r.images[:, 0].cpu()], caps, f"{enc} encoding, {dataset}")
    return found


def part_onnx(model: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, q: int) -> dict[str, object]:
    print("\n(d) ONNX export, the same Square run (same seed)")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        om = OnnxModel.load(path)
        start = time.perf_counter()
        a = get_attack("square", eps=eps, queries=q, p_init=0.05)(model, x, y, seed=0)
        ta = time.perf_counter() - start
        start = time.perf_counter()
        b = get_attack("square", eps=eps, queries=q, p_init=0.05)(om, x, y, seed=0)
        tb = time.perf_counter() - start
    same = int((a.success == b.success).sum())
    print(f"  PyTorch success {a.success_rate:.3f}, ONNX success {b.success_rate:.3f}; identical verdicts on "
          f"{same} of {x.shape[0]} tiles; ONNX time / PyTorch time {tb / ta:.2f}")
    return {"success_pytorch": a.success_rate, "success_onnx": b.success_rate, "identical_verdicts": same,
            "n": x.shape[0], "pytorch_wall_s": ta, "onnx_wall_s": tb, "onnx_time_over_pytorch": tb / ta}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pathmnist")
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--eps", type=float, default=8.0, help="Linf budget in 1/255 (default 8)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="for --parts square-seeds")
    parser.add_argument("--hsj-n", type=int, default=32)
    parser.add_argument("--hsj-queries", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--fooling-queries", type=int, default=400_000)
    parser.add_argument("--out", default=None, help="folder for the fooling-image grids")
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/blackbox_DATASET[_PARTS].json)")
    parser.add_argument("--parts", nargs="+", default=PARTS,
                        choices=["square", "square-seeds", "square-p-init", "hsj", "fooling", "onnx"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    model = load_classifier(args.model)[0].eval()
    test = load_dataset(args.dataset).split("test")
    x, y = test.get(test.sample_index(4 * args.n))
    with torch.no_grad():
        ok = model.predict(x) == y
    x, y = x[ok][: args.n], y[ok][: args.n]
    eps = args.eps / 255
    print(f"{args.dataset}, model {args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    found: dict[str, object] = {"dataset": args.dataset, "model": args.model, "n": x.shape[0], "parts": args.parts}
    if "square" in args.parts:
        found["square"] = part_square(model, x, y, eps, args.queries)
    if "square-seeds" in args.parts:
        found["square_seeds"] = part_square_seeds(model, x, y, eps, args.queries, args.seeds)
    if "square-p-init" in args.parts:
        found["square_p_init"] = part_square_p_init(model, x, y, eps, args.queries, args.seeds)
    if "hsj" in args.parts:
        found["hsj"] = part_hsj(model, x[: args.hsj_n], y[: args.hsj_n], args.hsj_queries)
    if "fooling" in args.parts:
        found["fooling"] = part_fooling(model, args.fooling_queries, Path(args.out) if args.out else None,
                                        args.dataset)
    if "onnx" in args.parts:
        found["onnx"] = part_onnx(model, x, y, eps, args.queries)
    name = f"blackbox_{args.dataset}" + ("" if args.parts == PARTS else "_" + "-".join(args.parts))
    write_results(name, found, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
