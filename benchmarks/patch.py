"""Adversarial patch: optimisation speed, and targeted success towards every class.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/patch.py --model CKPT [--dataset pathmnist]
        [--surrogate CKPT] [--steps 400] [--area 0.1] [--json OUT]

Prints
  1. one optimisation step on a batch of 64 as a ratio to the model's forward+backward of that
     batch (the floor; the issue's target is about 1x), medians of interleaved rounds;
  2. for each target class: the held-out targeted success of a patch covering at most --area of
     the image (random placements, counted on the tiles the model classified correctly), the
     natural crop of that class and the same-class control, and with --surrogate the success of
     a patch crafted on the surrogate, on the surrogate and transferred to the victim.
Writes the figures to OUT, by default benchmarks/results/patch_DATASET.json.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F

from medfool.attacks import get_attack
from medfool.attacks.patch.natural import natural_patch
from medfool.attacks.patch.transfer import transfer_patch
from medfool.data import load_dataset
from medfool.models import load_classifier
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pathmnist")
    parser.add_argument("--model", required=True)
    parser.add_argument("--surrogate", default=None)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--area", type=float, default=0.1)
    parser.add_argument("--n-craft", type=int, default=2000)
    parser.add_argument("--n", type=int, default=500, help="held-out test tiles (default 500)")
    parser.add_argument("--targets", nargs="*", default=None, help="class names (default: every class)")
    parser.add_argument("--json", default=None, help="results file (default: benchmarks/results/patch_DATASET.json)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    ds = load_dataset(args.dataset)
    model = load_classifier(args.model)[0]
    surrogate = load_classifier(args.surrogate)[0] if args.surrogate else None
    train, test = ds.split("train"), ds.split("test")
    xtr, ytr = train.get(train.sample_index(args.n_craft))  # seeded random subsets, not the first n
    xall, yall = test.get(test.sample_index(args.n))

    batch = 64
    xb, yb = xtr[:batch], ytr[:batch]

    def floor() -> None:
        xa = xb.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xa), yb), xa)

    steps = 20
    timing = get_attack("patch", area=args.area, steps=steps, batch_size=batch)
    times: dict[str, list[float]] = {"floor": [], "step": []}
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(steps):
            floor()
        times["floor"].append((time.perf_counter() - t) / steps)
        t = time.perf_counter()
        timing.craft(model, xb, yb, torch.Generator().manual_seed(0), target=0)  # type: ignore[attr-defined]
        times["step"].append((time.perf_counter() - t) / steps)
    f, s = statistics.median(times["floor"]), statistics.median(times["step"])
    print(f"{args.dataset}: one patch step on a batch of {batch}: {s * 1e3:.1f} ms; forward+backward to the input "
          f"{f * 1e3:.1f} ms; ratio {s / f:.2f}")

    names = ds.info.class_names
    targets = [ds.info.class_index(t) for t in args.targets] if args.targets else range(len(names))
    attack = get_attack("patch", area=args.area, steps=args.steps)
    k = attack.side(*xtr.shape[-2:])  # type: ignore[attr-defined]
    area = k * k / (xtr.shape[-1] * xtr.shape[-2])
    print(f"\npatch {k}x{k} ({100 * area:.1f} % of the image), {args.steps} steps on {len(xtr)} train tiles; "
          f"targeted success on held-out test tiles of other classes, random placements")
    head = f"{'target':<38} {'n':>4} {'patch':>6} {'natural':>8} {'control':>8}"
    if surrogate is not None:
        head += f" {'on surrogate':>13} {'transferred':>12}"
    print(head + f" {'craft s':>8}")
    rows: list[dict[str, object]] = []
    for t in targets:
        keep = yall != t
        x, y = xall[keep], yall[keep]
        start = time.perf_counter()
        patch = attack.craft(model, xtr, ytr, torch.Generator().manual_seed(0), target=t)  # type: ignore[attr-defined]
        took = time.perf_counter() - start
        adv = attack.apply(model, patch, x, y, torch.Generator().manual_seed(1))  # type: ignore[attr-defined]
        nat = natural_patch(model, xtr, ytr, x, y, k, torch.Generator().manual_seed(2), target=t)
        ctl = natural_patch(model, xtr, ytr, x, y, k, torch.Generator().manual_seed(2), target=t, control=True)
        row = (f"{names[t][:38]:<38} {int(adv.clean_correct.sum()):>4} {adv.success_rate:>6.3f} "
               f"{nat.success_rate:>8.3f} {ctl.success_rate:>8.3f}")
        found: dict[str, object] = {"target": names[t], "n": int(adv.clean_correct.sum()),
                                    "patch_success": adv.success_rate, "natural_success": nat.success_rate,
                                    "control_success": ctl.success_rate}
        if surrogate is not None:
            tr = transfer_patch(attack, surrogate, model, xtr, ytr, x, y, target=t)  # type: ignore[arg-type]
            row += f" {tr.on_surrogate.success_rate:>13.3f} {tr.on_victim.success_rate:>12.3f}"
            found |= {"on_surrogate_success": tr.on_surrogate.success_rate,
                      "transferred_success": tr.on_victim.success_rate}
        print(row + f" {took:>8.1f}", flush=True)
        rows.append(found | {"craft_s": took})
    write_results(f"patch_{args.dataset}", {
        "dataset": args.dataset, "model": args.model, "surrogate": args.surrogate, "batch": batch,
        "step_ms_per_batch": s * 1e3, "forward_backward_ms_per_batch": f * 1e3, "step_over_forward_backward": s / f,
        "patch_px": k, "area_fraction": area, "steps": args.steps, "n_craft": len(xtr), "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
