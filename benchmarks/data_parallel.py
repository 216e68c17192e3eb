"""Data-parallel robust training on Ray Train against one worker, at the same number of epochs.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/data_parallel.py [--dataset pneumoniamnist]
        [--method pgd] [--epochs 4] [--val-images 524] [--seed 0] [--json OUT]
        (writes benchmarks/results/data_parallel_DATASET_METHOD.json unless --json names another file)

Trains the same robust objective (``medfool defend adv-train``'s: PGD-7 at 8/255 by default) on
1 Ray worker and on 2 Ray workers, one torch thread each, one after the other,
with ``--epochs`` fixed and early stopping out of reach (patience above the epochs), and reports
for each: the selected epoch's validation accuracy and PGD-10 robust accuracy (on the first
``--val-images`` validation images), every epoch's figures, and the wall time (Ray's start and
the workers' data loading included). The difference of the two robust accuracies is the figure
the comparison is about; both models are also evaluated on the test split.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from medfool.defences.robust_training import RobustObjective
from medfool.models.train import TrainConfig
from medfool.runs.common import DataSource
from medfool.runs.train_ray import Spread, train_on_ray
from record import write_results

RUNS = (("1 worker", 1, 1), ("2 workers", 2, 1))  # one torch thread per worker


def summary(record: dict[str, Any]) -> dict[str, Any]:
    best = record["history"][record["best_epoch"] - 1]
    return {"best_epoch": record["best_epoch"], "epochs_run": record["epochs_run"],
            "val_accuracy": best["val_accuracy"], "val_robust_accuracy": best["val_robust_accuracy"],
            "last_epoch_val_robust_accuracy": record["history"][-1]["val_robust_accuracy"],
            "test_accuracy": (record["metrics"]["test"] or {}).get("accuracy"),
            "history": [{k: row[k] for k in ("epoch", "train_loss", "val_accuracy", "val_robust_accuracy")}
                        for row in record["history"]],
            "data_parallel": record.get("data_parallel")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="pneumoniamnist")
    ap.add_argument("--method", default="pgd")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--val-images", type=int, default=524)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    data = DataSource(args.dataset, allow_download=False)
    objective = RobustObjective(method=args.method, val_images=args.val_images, seed=args.seed)
    cfg = TrainConfig(epochs=args.epochs, patience=args.epochs + 1, seed=args.seed)
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, workers, threads in RUNS:
            start = time.perf_counter()
            record = train_on_ray(data, cfg, Path(tmp) / f"w{workers}", Spread(workers, threads=threads), objective)
            rows[label] = summary(record) | {"wall_s": time.perf_counter() - start, "workers": workers,
                                             "threads_per_worker": threads}
            r = rows[label]
            print(f"{label}: best epoch {r['best_epoch']}/{r['epochs_run']}, val accuracy {r['val_accuracy']:.4f}, "
                  f"val robust accuracy (PGD-10) {r['val_robust_accuracy']:.4f}, test accuracy "
                  f"{r['test_accuracy']:.4f}, {r['wall_s']:.0f} s", flush=True)
    one, two = (rows[label] for label, _, _ in RUNS)
    gap = two["val_robust_accuracy"] - one["val_robust_accuracy"]
    last_gap = two["last_epoch_val_robust_accuracy"] - one["last_epoch_val_robust_accuracy"]
    print(f"2 workers minus 1 worker, val robust accuracy: {100 * gap:+.1f} points at the selected epochs, "
          f"{100 * last_gap:+.1f} at the last ({args.val_images} validation images); wall time ratio "
          f"{two['wall_s'] / one['wall_s']:.2f}")
    write_results(f"data_parallel_{args.dataset}_{args.method}",
                  {"dataset": args.dataset, "method": args.method, "epochs": args.epochs,
                   "val_images": args.val_images, "seed": args.seed, "runs": rows,
                   "robust_gap_points": 100 * gap, "last_epoch_robust_gap_points": 100 * last_gap,
                   "wall_ratio_2_to_1": two["wall_s"] / one["wall_s"]}, args.json)


if __name__ == "__main__":
    main()
