"""Training benchmark: wall time and test accuracy of the small CNN on the real data, on this machine.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/train.py [--datasets pneumoniamnist ...] [--seed 0]
        [--json OUT]

Prints, per dataset, the measured test accuracy against its target and the wall time as a
ratio of the time budget (ratio <= 1.00 meets it). Default training options, one process.
Writes the rows to OUT, by default benchmarks/results/train_DATASET[-DATASET...].json.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from medfool.data import load_dataset
from medfool.models.train import TrainConfig, fit
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)

# dataset -> (minimum test accuracy, time budget in seconds); None = no budget set
TARGETS: dict[str, tuple[float, float | None]] = {
    "pneumoniamnist": (0.84, 120.0),
    "lc25000_lung": (0.93, 180.0),
    "pathmnist": (0.75, None),  # the 1,000-tile subset: accuracy on its held-out 20 %
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the reference machine has 2 cores)")
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/train_DATASET[-DATASET...].json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'dataset':<16} {'n_train':>7} {'epochs':>6} {'test_acc':>8} {'target':>6} {'AUC':>6} "
          f"{'wall_s':>7} {'budget':>6} {'time/budget':>11}  verdict")
    ok = True
    for name in args.datasets:
        ds = load_dataset(name)
        t0 = time.perf_counter()
        result = fit(ds, TrainConfig(seed=args.seed))
        wall = time.perf_counter() - t0  # includes the final validation and test evaluation
        target, budget = TARGETS.get(name, (0.0, None))
        acc = result.test["accuracy"] if result.test else float("nan")
        passed = acc >= target and (budget is None or wall <= budget)
        ok &= passed
        ratio = f"{wall / budget:.2f}" if budget else "-"
        print(f"{name:<16} {len(ds.split('train')):>7} {result.record['epochs_run']:>6} {acc:>8.3f} {target:>6.2f} "
              f"{result.test['auc'] if result.test else float('nan'):>6.3f} {wall:>7.1f} "
              f"{budget or float('nan'):>6.0f} {ratio:>11}  {'PASS' if passed else 'FAIL'}", flush=True)
        rows.append({"dataset": name, "n_train": len(ds.split("train")), "test_accuracy": acc,
                     "target_accuracy": target, "test_auc": result.test["auc"] if result.test else float("nan"),
                     "wall_s": wall, "budget_s": budget, "time_over_budget": wall / budget if budget else None,
                     "passed": passed, "epochs_run": result.record["epochs_run"], "best_epoch": result.best_epoch,
                     "seed": args.seed})
    write_results("train_" + "-".join(args.datasets), {"threads": args.threads, "rows": rows, "all_passed": ok},
                  args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
