"""JSMA batching: time per image falls as the batch grows; memory stays bounded at 64 x 64 x 3.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/jsma.py [--model28 CKPT] [--model64 CKPT] [--json OUT]

Trains small CNNs when no checkpoint is given (PathMNIST subset at 28 px, LC25000 lung at
64 px on 3,000 tiles). Prints ms per image at batch sizes 1, 8, 32, 128 as a ratio to batch 1,
and the peak resident memory of a batch of 128 tiles at 64 x 64 x 3 (the all-pairs saliency
search would need 128 * (64*64*3)^2 * 4 bytes = 77 GiB for its score matrix alone). Writes the
figures to OUT, by default benchmarks/results/jsma.json.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
import warnings

import numpy as np
import torch

from medfool.attacks import get_attack
from medfool.data import load_dataset
from medfool.data.split import stratified_split
from medfool.models import load_classifier
from medfool.models.train import TrainConfig, fit
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)


def model_for(name: str, ckpt: str | None, max_train: int | None):
    ds = load_dataset(name)
    if ckpt:
        return load_classifier(ckpt)[0], ds
    train = ds.split("train")
    if max_train and len(train) > max_train:
        keep = stratified_split(train.labels.numpy(), {"a": max_train / len(train),
                                                        "b": 1 - max_train / len(train)}, 0)["a"]
        train = train.subset(np.asarray(keep))
    return fit(ds, TrainConfig(epochs=6), train_split=train).model.eval(), ds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model28", default=None)
    parser.add_argument("--model64", default=None)
    parser.add_argument("--json", default=None, help="results file (default: benchmarks/results/jsma.json)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    model, ds = model_for("pathmnist", args.model28, None)
    x, y = ds.split("test").tensors()
    attack = get_attack("jsma")
    base = None
    rows: list[dict[str, float]] = []
    print("JSMA on PathMNIST 28x28x3 (gamma 0.1, theta +1)")
    print(f"{'batch':>6} {'ms/image':>9} {'/ batch 1':>10} {'success':>8}")
    for bs in (1, 8, 32, 128):
        n = 8 if bs == 1 else bs  # batch 1: eight single-image calls
        t = time.perf_counter()
        rates = [attack(model, x[i:i + bs], y[i:i + bs]).success_rate for i in range(0, n, bs)]
        per = (time.perf_counter() - t) / n * 1e3
        base = base or per
        print(f"{bs:>6} {per:>9.1f} {per / base:>10.2f} {np.nanmean(rates):>8.3f}")
        rows.append({"batch": bs, "ms_per_image": per, "over_batch_1": per / base, "success": float(np.nanmean(rates))})
    model64, ds64 = model_for("lc25000_lung_64", args.model64, 3000)
    x64, y64 = ds64.split("test").get(range(128))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    r = get_attack("jsma", gamma=0.02)(model64, x64, y64)
    per64 = (time.perf_counter() - t) / 128 * 1e3
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nLC25000 lung 64x64x3, batch 128, gamma 0.02: {per64:.1f} ms/image, "
          f"success {r.success_rate:.3f}, peak RSS {after:.0f} MiB (was {before:.0f} MiB before the attack)")
    write_results("jsma", {"pathmnist_28": {"gamma": 0.1, "theta": 1, "rows": rows},
                           "lc25000_lung_64": {"gamma": 0.02, "batch": 128, "ms_per_image": per64,
                                               "success": r.success_rate, "peak_rss_mib": after,
                                               "rss_before_mib": before}}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
