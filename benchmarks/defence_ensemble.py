"""Ensembles and adversarial training beside Paul et al.'s table (ISBI 2020: three CNNs on NLST
lung CT; single models under FGSM 39-46 %, under a one-pixel attack 72-73 %; the adversarially
trained ensemble 82.3 % and 81.4 %).

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/defence_ensemble.py --dataset pneumoniamnist \\
        --clean A B C --robust D E F [--n 200] [--eps 8] [--preset standard] [--json OUT]

Writes the rows to OUT, by default benchmarks/results/defence_ensemble_DATASET[_only-TEXT].json, and
prints them as the markdown tables of benchmarks/README.md (``--render OUT`` prints them again from
a results file).

``--clean``: three default-trained models (seeds); ``--robust``: three adversarially trained ones
(e.g. ``medfool defend adv-train --method fgsm-rs``, Paul et al.'s FGSM training). Reported on one
seeded sample of ``n`` test images, as accuracy (an image counts when it is classified correctly
after the attack): clean; FGSM at ``eps``/255 (Paul et al.'s attack); a one-pixel attack
(differential evolution, the audit's budget: population 100, 20 generations, on the first
``n_pixel`` images); and the audit's ensemble at ``eps``/255 (``--preset``, by default ``standard``:
AutoAttack's budgets), the strongest attacker, which Paul et al. did not run. Each ensemble
averages its members' logits and is attacked as one model.

Every accuracy comes with its Wilson 95 % interval, the balanced accuracy, the per-class figures
and the constant-classifier line of the sample (the majority class's share), as
:func:`medfool.utils.stats.accuracy_breakdown` computes them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from medfool.attacks import get_attack
from medfool.data import load_dataset
from medfool.models import Classifier, ensemble_classifier, load_classifier
from medfool.utils.stats import accuracy_breakdown, positive_class
from record import slug, write_results  # benchmarks/record.py (the script folder is on sys.path)


def correct_after(name: str, model: Classifier, x: torch.Tensor, y: torch.Tensor, **opts: float | str) -> list[bool]:
    """Per image: still classified correctly after the attack (never correct if it was wrong before)."""
    r = get_attack(name, **opts)(model, x, y, seed=0, ids=list(range(x.shape[0])))
    return (r.clean_correct & ~r.success).tolist()


def pct_ci(b: dict[str, Any]) -> str:
    lo, hi = b["ci95"]
    return f"{100 * b['accuracy']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


ATTACKS = (("clean", "clean"), ("fgsm", "FGSM"), ("onepixel", "one pixel"), ("ensemble", "the ensemble"))


def tables(data: dict[str, Any]) -> str:
    """The headline table (accuracy [95 % CI] after each attack, balanced and the constant line
    under the ensemble) and the per-class table under the ensemble."""
    rows = data["rows"]
    head = "| model | " + " | ".join(label for _, label in ATTACKS) + " | balanced, the ensemble | constant answer |"
    out = [head, "|---|" + "---:|" * (len(ATTACKS) + 2)]
    for r in rows:
        e = r["ensemble"]
        out.append(f"| {r['model']} | " + " | ".join(pct_ci(r[k]) for k, _ in ATTACKS)
                   + f" | {100 * e['balanced']:.1f} % | {100 * e['constant']:.1f} % ({e['majority']}) |")
    names = list(rows[0]["ensemble"]["per_class"])
    out += ["", "| model (the ensemble) | " + " | ".join(f"{n} (n)" for n in names) + " |",
            "|---|" + "---:|" * len(names)]
    for r in rows:
        pc = r["ensemble"]["per_class"]
        out.append(f"| {r['model']} | " + " | ".join(f"{100 * pc[n]['accuracy']:.1f} % ({pc[n]['n']})" for n in names)
                   + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="pneumoniamnist")
    ap.add_argument("--clean", nargs=3)
    ap.add_argument("--robust", nargs=3)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-pixel", type=int, default=100)
    ap.add_argument("--eps", type=float, default=8)
    ap.add_argument("--preset", default="standard", choices=["fast", "standard"],
                    help="the ensemble attack's budgets (default standard: AutoAttack's)")
    ap.add_argument("--only", default=None, help="run only the rows whose name contains this text")
    ap.add_argument("--json", default=None,
                    help="results file (default: benchmarks/results/defence_ensemble_DATASET[_only-TEXT].json)")
    ap.add_argument("--render", default=None, metavar="RESULTS", help="print the tables of a results file and stop")
    args = ap.parse_args()
    if args.render:
        print(tables(json.loads(Path(args.render).read_text())))
        return
    if not args.clean or not args.robust:
        ap.error("--clean and --robust name three models each")
    data = load_dataset(args.dataset)
    split = data.split("test")
    ids = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:args.n].sort().values.tolist()
    x, y = split.get(ids)
    clean = [load_classifier(p)[0] for p in args.clean]
    robust = [load_classifier(p)[0] for p in args.robust]
    models = {f"clean model {i + 1}": m for i, m in enumerate(clean)}
    models["ensemble of the clean models"] = ensemble_classifier(clean).eval()
    models |= {f"adversarially trained model {i + 1}": m for i, m in enumerate(robust)}
    models["ensemble of the adversarially trained models"] = ensemble_classifier(robust).eval()
    eps = args.eps / 255
    info = data.info
    names, positive = list(info.class_names), positive_class(info.critical_classes, info.num_classes)
    labels, labels_pixel = y.tolist(), y[:args.n_pixel].tolist()

    def breakdown(correct: list[bool], lab: list[int]) -> dict[str, Any]:
        return accuracy_breakdown(correct, lab, names, positive=positive)

    rows = []
    print(f"{args.dataset}: {len(ids)} test images (one-pixel: the first {args.n_pixel}), eps {args.eps:g}/255, "
          f"ensemble preset {args.preset}")
    for name, model in models.items():
        if args.only and args.only not in name:
            continue
        with torch.no_grad():
            clean_ok = (model.predict(x) == y).tolist()
        row = {"model": name,
               "clean": breakdown(clean_ok, labels),
               "fgsm": breakdown(correct_after("fgsm", model, x, y, eps=eps), labels),
               "onepixel": breakdown(correct_after("onepixel", model, x[:args.n_pixel], y[:args.n_pixel],
                                                   population=100, generations=20), labels_pixel),
               "ensemble": breakdown(correct_after("ensemble", model, x, y, eps=eps, preset=args.preset), labels)}
        rows.append(row)
        print(f"{name}: clean {pct_ci(row['clean'])}, FGSM {pct_ci(row['fgsm'])}, one pixel "
              f"{pct_ci(row['onepixel'])}, ensemble ({args.preset}) {pct_ci(row['ensemble'])}; balanced under "
              f"the ensemble {100 * row['ensemble']['balanced']:.1f} %, constant line "
              f"{100 * row['ensemble']['constant']:.1f} %", flush=True)
    name = f"defence_ensemble_{args.dataset}" + (f"_only-{slug(args.only)}" if args.only else "")
    print(tables({"rows": rows}))
    write_results(name, {"dataset": args.dataset, "n": len(ids), "n_pixel": min(args.n_pixel, len(ids)),
                         "eps_255": args.eps, "preset": args.preset, "clean": args.clean, "robust": args.robust,
                         "rows": rows}, args.json)


if __name__ == "__main__":
    main()
