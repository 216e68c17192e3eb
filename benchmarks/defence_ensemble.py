"""Ensembles and adversarial training beside Paul et al.'s table (ISBI 2020: three CNNs on NLST
lung CT; single models under FGSM 39-46 %, under a one-pixel attack 72-73 %; the adversarially
trained ensemble 82.3 % and 81.4 %).

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/defence_ensemble.py --dataset pneumoniamnist \\
        --clean A B C --robust D E F [--n 200] [--eps 8] [--json OUT]

Writes the rows to OUT, by default benchmarks/results/defence_ensemble_DATASET[_only-TEXT].json.

``--clean``: three default-trained models (seeds); ``--robust``: three adversarially trained ones
(e.g. ``medfool defend adv-train --method fgsm-rs``, Paul et al.'s FGSM training). Reported on one
seeded sample of ``n`` test images, as accuracy (an image counts when it is classified correctly
after the attack): clean; FGSM at ``eps``/255 (Paul et al.'s attack); a one-pixel attack
(differential evolution, the audit's budget: population 100, 20 generations, on the first
``n_pixel`` images); and the audit's ensemble (fast preset) at ``eps``/255, the strongest attacker,
which Paul et al. did not run. Each ensemble averages its members' logits and is attacked as one
model.
"""

from __future__ import annotations

import argparse

import torch

from medfool.attacks import get_attack
from medfool.data import load_dataset
from medfool.models import Classifier, ensemble_classifier, load_classifier
from record import slug, write_results  # benchmarks/record.py (the script folder is on sys.path)


def accuracy_under(name: str, model: Classifier, x: torch.Tensor, y: torch.Tensor, **opts: float) -> float:
    r = get_attack(name, **opts)(model, x, y, seed=0, ids=list(range(x.shape[0])))
    return r.robust_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="pneumoniamnist")
    ap.add_argument("--clean", nargs=3, required=True)
    ap.add_argument("--robust", nargs=3, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-pixel", type=int, default=100)
    ap.add_argument("--eps", type=float, default=8)
    ap.add_argument("--only", default=None, help="run only the rows whose name contains this text")
    ap.add_argument("--json", default=None,
                    help="results file (default: benchmarks/results/defence_ensemble_DATASET[_only-TEXT].json)")
    args = ap.parse_args()
    split = load_dataset(args.dataset).split("test")
    ids = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:args.n].sort().values.tolist()
    x, y = split.get(ids)
    clean = [load_classifier(p)[0] for p in args.clean]
    robust = [load_classifier(p)[0] for p in args.robust]
    models = {f"clean model {i + 1}": m for i, m in enumerate(clean)}
    models["ensemble of the clean models"] = ensemble_classifier(clean).eval()
    models |= {f"adversarially trained model {i + 1}": m for i, m in enumerate(robust)}
    models["ensemble of the adversarially trained models"] = ensemble_classifier(robust).eval()
    eps = args.eps / 255
    rows = []
    print(f"{args.dataset}: {len(ids)} test images (one-pixel: the first {args.n_pixel}), eps {args.eps:g}/255")
    print(f"{'model':<46} {'clean':>6} {'FGSM':>6} {'1-pixel':>8} {'ensemble':>9}")
    for name, model in models.items():
        if args.only and args.only not in name:
            continue
        with torch.no_grad():
            acc = float((model.predict(x) == y).float().mean())
        row = {"model": name, "clean_accuracy": acc,
               "fgsm_accuracy": accuracy_under("fgsm", model, x, y, eps=eps),
               "onepixel_accuracy": accuracy_under("onepixel", model, x[:args.n_pixel], y[:args.n_pixel],
                                                   population=100, generations=20),
               "ensemble_fast_accuracy": accuracy_under("ensemble", model, x, y, eps=eps, preset="fast")}
        rows.append(row)
        print(f"{name:<46} {row['clean_accuracy']:>6.1%} {row['fgsm_accuracy']:>6.1%} "
              f"{row['onepixel_accuracy']:>8.1%} {row['ensemble_fast_accuracy']:>9.1%}", flush=True)
    name = f"defence_ensemble_{args.dataset}" + (f"_only-{slug(args.only)}" if args.only else "")
    write_results(name, {"dataset": args.dataset, "n": len(ids), "n_pixel": min(args.n_pixel, len(ids)),
                         "eps_255": args.eps, "clean": args.clean, "robust": args.robust, "rows": rows}, args.json)


if __name__ == "__main__":
    main()
