"""How much activation clustering's verdict on the test suite's synthetic backdoor moves with the
training seed (a fresh machine's CPU kernels move a trained model about as much as a new seed).

Usage:  python benchmarks/backdoor_seeds.py [--seeds 0-7] [--threads 2] [--data synthetic|pathmnist] [--json OUT]

Writes the rows and the spreads to OUT, by default benchmarks/results/backdoor_seeds[_pathmnist].json.

``synthetic``: the data, poison and detector of tests/defences/test_backdoor_detection.py: a
synthetic 4-class set (600 training images, data seed 5), 10 % BadNets poisons (4 x 4 checker,
target 0, poison seed 0), a width-8 small CNN trained 6 epochs. ``pathmnist`` (needs
MEDFOOL_DATA_DIR): those of tests/defences/test_backdoor_realdata.py: the 700 PathMNIST training
tiles, 5 % BadNets poisons (3 x 3 checker, target adipose), the default small CNN and training.
Only the training seed changes.
Prints the true- and false-positive rate per seed, the clean classes whose split was flagged,
and the spread (min, median, max) of each rate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medfool.attacks.poisoning.backdoor import BackdoorConfig, poison
from medfool.attacks.poisoning.triggers import make_trigger
from medfool.data import load_dataset, make_synthetic
from medfool.defences.backdoor import activation_clustering, detection_rates
from medfool.models.train import TrainConfig, fit
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=seed_range, default=seed_range("0-7"), help="training seeds, e.g. 0-7")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", choices=("synthetic", "pathmnist"), default="synthetic")
    ap.add_argument("--json", default=None,
                    help="results file (default: benchmarks/results/backdoor_seeds[_pathmnist].json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.data == "synthetic":
        ds = make_synthetic(n_classes=4, seed=5, per_split=(600, 120, 160))
        trigger = make_trigger("patch", ds.split("train").image_shape, size=4, shape="checker")
        config, target = BackdoorConfig(rate=0.1, target=0), "0"
    else:
        ds = load_dataset("pathmnist")
        trigger = make_trigger("patch", ds.split("train").image_shape)
        config = BackdoorConfig(rate=0.05, target=ds.info.class_index("adipose"))
        target = str(config.target)
    train = ds.split("train")
    ps = poison(train, trigger, config, num_classes=ds.info.num_classes, task="multi-class", seed=0)
    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        cfg = TrainConfig(arch_kwargs={"width": 8}, epochs=6, batch_size=64, lr=1e-2, seed=seed) \
            if args.data == "synthetic" else TrainConfig(seed=seed)
        model = fit(ds, cfg, train_split=ps.split).model
        flags = activation_clustering(model, ps.split, seed=0)
        rates = detection_rates(flags, ps.mask)
        classes = flags.details["classes"]
        wrong = [k for k, v in classes.items() if v["flagged"] and k != target]
        rows.append({"seed": seed, "tpr": rates["tpr"], "fpr": rates["fpr"], "clean_classes_flagged": wrong,
                     "classes": classes, "wall_s": time.perf_counter() - start})
        print(f"seed {seed}: TPR {rates['tpr']:.3f}  FPR {rates['fpr']:.3f}  clean classes flagged "
              f"{wrong or 'none'}  ({rows[-1]['wall_s']:.0f} s)", flush=True)
    span = f"seeds {args.seeds[0]}-{args.seeds[-1]}"
    spread: dict[str, dict[str, float]] = {}
    for key in ("tpr", "fpr"):
        values = [r[key] for r in rows]
        spread[key] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
        print(f"{key.upper()} over {span}: min {min(values):.3f}, median {statistics.median(values):.3f}, "
              f"max {max(values):.3f}")
    for what, label, pick in (("the poisoned label", "poisoned_label", lambda k: k == target),
                              ("clean labels", "clean_labels", lambda k: k != target)):
        cells = [v for r in rows for k, v in r["classes"].items() if pick(k)]
        sil, size = [c["silhouette"] for c in cells], [c["small_cluster"] for c in cells]
        spread[label] = {"silhouette_min": min(sil), "silhouette_max": max(sil),
                         "small_cluster_fraction_min": min(size), "small_cluster_fraction_max": max(size)}
        print(f"{what} over {span}: silhouette {min(sil):.2f}-{max(sil):.2f}, smaller cluster "
              f"{min(size):.3f}-{max(size):.3f} of the label")
    name = "backdoor_seeds" + ("" if args.data == "synthetic" else f"_{args.data}")
    write_results(name, {"data": args.data, "threads": args.threads, "rows": rows, "spread": spread}, args.json)


if __name__ == "__main__":
    main()
