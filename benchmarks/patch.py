"""Patch optimisation speed and strength on real tiles.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/patch.py [--model CKPT] [--dataset pathmnist]
        [--target CLASS] [--steps 400]

Prints one optimisation step's time on a batch as a ratio to the model's forward+backward on
that batch (the floor), and the targeted success of the crafted patch on held-out test tiles
at random placements, for patch areas from 1 % to 25 % of the image.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings

import torch

from medfool.attacks import get_attack
from medfool.data import load_dataset
from medfool.models import load_classifier
from medfool.models.train import TrainConfig, fit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pathmnist")
    parser.add_argument("--model", default=None)
    parser.add_argument("--target", default="adipose")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--areas", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.15, 0.25])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    ds = load_dataset(args.dataset)
    model = load_classifier(args.model)[0] if args.model else fit(ds, TrainConfig(seed=0)).model.eval()
    target = ds.info.class_index(args.target)
    xtr, ytr = ds.split("train").get(range(min(2000, len(ds.split("train")))))
    te = ds.split("test")
    xte, yte = te.get(range(min(500, len(te))))
    keep = yte != target
    xte, yte = xte[keep], yte[keep]

    batch = 64
    xb, yb = xtr[:batch], ytr[:batch]

    def floor() -> None:
        xa = xb.clone().requires_grad_(True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), yb), xa)

    attack = get_attack("patch", area=0.1, steps=20, batch_size=batch)
    times = {"floor": [], "step": []}
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            floor()
        times["floor"].append((time.perf_counter() - t) / 20)
        t = time.perf_counter()
        attack.craft(model, xb, yb, torch.Generator().manual_seed(0), target=target)  # type: ignore[attr-defined]
        times["step"].append((time.perf_counter() - t) / 20)
    f, s = statistics.median(times["floor"]), statistics.median(times["step"])
    print(f"{args.dataset}: one patch step on a batch of {batch}: {s * 1e3:.1f} ms; forward+backward {f * 1e3:.1f} ms; "
          f"ratio {s / f:.2f}")
    print(f"\ntarget {ds.info.class_names[target]!r}, {args.steps} steps, held-out test tiles: {len(xte)}")
    print(f"{'area':>6} {'side':>5} {'targeted success':>17} {'craft s':>8}")
    for area in args.areas:
        att = get_attack("patch", area=area, steps=args.steps)
        t = time.perf_counter()
        patch = att.craft(model, xtr, ytr, torch.Generator().manual_seed(0), target=target)  # type: ignore[attr-defined]
        took = time.perf_counter() - t
        r = att.apply(model, patch, xte, yte, torch.Generator().manual_seed(1))  # type: ignore[attr-defined]
        print(f"{area:>6.2f} {patch.pixels.shape[-1]:>5} {float(r.success.float().mean()):>17.3f} {took:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
