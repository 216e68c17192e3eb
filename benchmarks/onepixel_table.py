"""Su et al.'s table for medical tiles: one-, three- and five-pixel attacks, untargeted and targeted.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/onepixel_table.py \\
            --model pathmnist=CKPT --model lc25000_lung=CKPT --model pneumoniamnist=CKPT \\
            [--n 12] [--population 400] [--generations 30] [--json OUT]

For each dataset and k in 1, 3, 5: success rate over correctly classified test tiles (a
seeded random sample) and the mean confidence of the adversarial class on the fooled ones
(untargeted: whatever class wins; targeted: a random other class per tile, seeded), with the
mean model evaluations per tile and the mean CIEDE2000 of the changed pixels against their
neighbourhood. Writes the rows to OUT, by default
benchmarks/results/onepixel_table_DATASET[-DATASET...].json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings

import torch

from medfool.attacks import get_attack
from medfool.data import load_dataset
from medfool.models import load_classifier
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, metavar="DATASET=CKPT")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--population", type=int, default=400)
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--pixels", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/onepixel_table_DATASET[-DATASET...].json)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    print(f"population {args.population}, at most {args.generations} generations, {args.n} tiles per cell")
    print(f"{'dataset':<16} {'k':>2} {'goal':<11} {'success':>8} {'confidence':>11} {'evals/tile':>11} "
          f"{'dE2000':>7} {'s':>6}")
    rows: list[dict[str, object]] = []
    for spec in args.model:
        name, _, ckpt = spec.partition("=")
        model = load_classifier(ckpt)[0]
        ds = load_dataset(name)
        test = ds.split("test")
        x, y = test.get(test.sample_index(4 * args.n))
        with torch.no_grad():
            ok = model.predict(x) == y
        x, y = x[ok][: args.n], y[ok][: args.n]
        shift = torch.randint(1, model.num_classes, y.shape, generator=torch.Generator().manual_seed(0))
        target = (y + shift) % model.num_classes
        for k in args.pixels:
            for goal in ("untargeted", "targeted"):
                attack = get_attack("onepixel", pixels=k, population=args.population, generations=args.generations)
                start = time.perf_counter()
                r = attack(model, x, y, target=target if goal == "targeted" else None, seed=0)
                took = time.perf_counter() - start
                fooled = r.success & r.clean_correct
                with torch.no_grad():
                    p = model.probabilities(r.x_adv)
                conf = p.gather(1, r.adv_pred.view(-1, 1))[:, 0]
                mean_conf = float(conf[fooled].mean()) if bool(fooled.any()) else float("nan")
                de = float(r.extras["delta_e"][fooled].mean()) if bool(fooled.any()) else float("nan")
                print(f"{name:<16} {k:>2} {goal:<11} {r.success_rate:>8.3f} {mean_conf:>11.3f} "
                      f"{float(r.queries.float().mean()):>11,.0f} {de:>7.1f} {took:>6.0f}", flush=True)
                rows.append({"dataset": name, "model": ckpt, "pixels": k, "goal": goal, "n": x.shape[0],
                             "success": r.success_rate, "mean_confidence": mean_conf,
                             "evals_per_tile": float(r.queries.float().mean()), "delta_e2000": de, "wall_s": took})
    datasets = "-".join(spec.partition("=")[0] for spec in args.model)
    write_results(f"onepixel_table_{datasets}", {"n": args.n, "population": args.population,
                                                 "generations": args.generations, "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
