"""What robust training costs: one epoch of each objective over one clean epoch, beside the
theoretical ratio (attack steps + 1 forward-backward passes per batch).

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/defence_training.py [--dataset pneumoniamnist]
        [--images 2048] [--steps 7] [--json OUT]

Writes the rows to OUT, by default benchmarks/results/defence_training_DATASET.json.

One process, the default small CNN, the same ``images`` training images and batch size for
every objective (clean, pgd with ``steps``, trades with ``steps``, fgsm-rs, noise), each timed
over one epoch without the per-epoch validation (best of two epochs). PGD and TRADES craft in
eval mode and add one forward pass per step, so their measured ratio sits near steps + 1;
the gap to it is the optimiser's and the data's share of a clean epoch.
"""

from __future__ import annotations

import argparse
import time

import torch

from medfool.data import load_dataset
from medfool.data.dataset import Dataset
from medfool.data.transforms import augment
from medfool.defences.robust_training import RobustObjective
from medfool.models.metrics import loss_fn
from medfool.models.train import TrainConfig, build_classifier, resolve_augment
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)


def epoch_seconds(dataset: Dataset, objective: RobustObjective | None, images: int, batch: int) -> float:
    cfg = TrainConfig(seed=0)
    train = dataset.split("train")
    model = build_classifier(dataset, cfg, train)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.rate)
    gen = torch.Generator().manual_seed(0)
    aug = resolve_augment("auto", model.meta.input_shape[0], cfg.arch)
    x_all, y_all = train.get(range(min(images, len(train))))
    best = float("inf")
    for _ in range(2):
        model.train()
        start = time.perf_counter()
        for i in range(0, x_all.shape[0], batch):
            x, y = augment(x_all[i:i + batch], aug, gen), y_all[i:i + batch]
            loss = objective.loss(model, x, y) if objective else loss_fn(model(x), y, model.task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="pneumoniamnist")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--json", default=None,
                    help="results file (default: benchmarks/results/defence_training_DATASET.json)")
    args = ap.parse_args()
    torch.manual_seed(0)
    dataset = load_dataset(args.dataset)
    clean = epoch_seconds(dataset, None, args.images, args.batch)
    rows = [{"objective": "clean", "epoch_s": clean, "ratio_to_clean": 1.0, "theory_ratio": 1.0}]
    for method in ("pgd", "trades", "fgsm-rs", "noise"):
        obj = RobustObjective(method=method, steps=args.steps)
        s = epoch_seconds(dataset, obj, args.images, args.batch)
        # trades also runs the clean forward of the loss: steps + 2 passes (one without backward)
        theory = {"pgd": args.steps + 1, "trades": args.steps + 1, "fgsm-rs": 2, "noise": 1}[method]
        rows.append({"objective": method, "epoch_s": s, "ratio_to_clean": s / clean, "theory_ratio": theory})
    print(f"{args.dataset}, {args.images} images, batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"{'objective':<10} {'epoch s':>8} {'x clean':>8} {'steps + 1':>10}")
    for r in rows:
        print(f"{r['objective']:<10} {r['epoch_s']:>8.2f} {r['ratio_to_clean']:>8.2f} {r['theory_ratio']:>10}")
    write_results(f"defence_training_{args.dataset}", {"dataset": args.dataset, "images": args.images,
                                                       "batch": args.batch, "steps": args.steps, "rows": rows},
                  args.json)


if __name__ == "__main__":
    main()
