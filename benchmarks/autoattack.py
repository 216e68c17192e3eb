"""The ensemble against the peers' strongest: robust accuracy and wall time on the same images.

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/autoattack.py --model CKPT --dataset NAME
        [--n 128] [--eps 4 8] [--seed 0] [--presets standard fast] [--skip-members] [--json OUT]

Writes the rows to OUT, by default benchmarks/results/autoattack_DATASET.json.

One process, one model, one seeded sample of ``n`` test images (robust accuracy is over all of
them, as AutoAttack reports it: an image counts as robust when it is classified correctly
after the attack). For each epsilon (in 1/255, Linf):

* PGD-10 (cross-entropy): the naive attacker;
* each member of the ensemble alone on every image (APGD-CE, APGD-T, FAB-T, Square), at the
  first preset's budgets;
* the ensemble (each member only on the images no earlier member broke) at each preset, timed;
* the reference, timed in the same process: torchattacks' ``AutoAttack`` (version standard,
  Linf) from 4 classes up; below that it crashes (its APGD-T indexes logits the model does not
  have), so torchattacks' ``MultiAttack`` of APGD-CE, APGD-DLR (3 classes and up), FAB and
  Square with 5,000 queries, each with torchattacks' defaults (10 steps for the gradient
  attacks, where AutoAttack's paper uses 100);
* with ``--equal-budgets``, the same reference with 100 steps: the standard preset's budgets,
  for a time comparison at equal work.

The verdict per epsilon and preset: ensemble <= every member and PGD-10 (first preset);
ensemble <= reference + 1 point; ensemble time <= reference time.
Needs torchattacks (pip install --no-deps torchattacks).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Callable

import torch

from medfool.attacks import get_attack
from medfool.attacks.ensemble import PRESETS
from medfool.data import load_dataset
from medfool.models import Classifier, load_classifier
from record import write_results  # benchmarks/record.py (the script folder is on sys.path)


def robust_of(model: Classifier, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.predict(x_adv) == y).float().mean())


Run = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reference(model: Classifier, eps: float, seed: int, steps: int | None = None) -> tuple[str, Run]:
    """The peers' strongest: torchattacks' AutoAttack as shipped (``steps=None``: its members'
    default of 10 steps), or the same members at ``steps`` (AutoAttack's paper budget is 100)."""
    import torchattacks

    k = model.meta.num_outputs
    it = {} if steps is None else {"steps": steps}
    tag = "" if steps is None else f", {steps} steps"
    if k >= 4 and steps is None:
        aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=k, seed=seed)
        return "torchattacks AutoAttack (standard)", aa
    if k >= 4:
        parts = [torchattacks.APGD(model, norm="Linf", eps=eps, loss="ce", seed=seed, **it),
                 torchattacks.APGDT(model, norm="Linf", eps=eps, n_classes=k, seed=seed, **it),
                 torchattacks.FAB(model, norm="Linf", eps=eps, multi_targeted=True, n_classes=k, seed=seed, **it),
                 torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, seed=seed)]
        return f"torchattacks AutoAttack members{tag}", torchattacks.MultiAttack(parts)
    parts = [torchattacks.APGD(model, norm="Linf", eps=eps, loss="ce", seed=seed, **it)]
    names = ["APGD-CE"]
    if k >= 3:
        parts.append(torchattacks.APGD(model, norm="Linf", eps=eps, loss="dlr", seed=seed, **it))
        names.append("APGD-DLR")
    parts.append(torchattacks.FAB(model, norm="Linf", eps=eps, n_classes=k, seed=seed, **it))
    parts.append(torchattacks.Square(model, norm="Linf", eps=eps, n_queries=5000, seed=seed))
    names += ["FAB", "Square 5000"]
    return f"torchattacks MultiAttack ({', '.join(names)}{tag})", torchattacks.MultiAttack(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--eps", type=float, nargs="+", default=[4.0, 8.0], help="in 1/255")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", nargs="+", default=["standard", "fast"], choices=sorted(PRESETS))
    parser.add_argument("--skip-members", action="store_true", help="no per-member rows (the slow part)")
    parser.add_argument("--equal-budgets", action="store_true",
                        help="also time the reference at AutoAttack's 100 steps (the standard preset's budgets)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None,
                        help="results file (default: benchmarks/results/autoattack_DATASET.json)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    model, _ = load_classifier(args.model)
    model.eval()
    split = load_dataset(args.dataset).split("test")
    index = split.sample_index(args.n, args.seed)
    x, y = split.get(index)
    ids = [int(i) for i in index]
    clean = robust_of(model, x, y)
    print(f"{args.dataset}: {args.n} test images (seed {args.seed}), clean accuracy {clean:.3f}, "
          f"{model.meta.num_outputs} outputs, presets {', '.join(args.presets)}")
    out: list[dict[str, object]] = []
    ok = True
    for e in args.eps:
        eps = e / 255
        rows: dict[str, tuple[float, float]] = {}

        def ours(name: str, label: str, eps: float = eps, rows: dict[str, tuple[float, float]] = rows,
                 **opts: object) -> None:
            t = time.perf_counter()
            r = get_attack(name, eps=eps, **opts)(model, x, y, seed=args.seed, ids=ids)
            rows[label] = (float((r.clean_correct & ~r.success).float().mean()), time.perf_counter() - t)
            assert float(r.linf.max()) <= eps + 1e-6, f"{label} left the ball"

        ours("pgd", "PGD-10 (naive)", steps=10)
        if not args.skip_members:
            spec = PRESETS[args.presets[0]]
            ours("apgd-ce", "APGD-CE", **spec["apgd-ce"])
            ours("apgd-t", "APGD-T", **spec["apgd-t"])
            ours("fab-t", "FAB-T", **spec["fab-t"])
            ours("square", f"Square {spec['square']['queries']}", **spec["square"])
        for preset in args.presets:
            ours("ensemble", f"ensemble ({preset})", preset=preset)
        refs = [reference(model, eps, args.seed)]
        if args.equal_budgets:
            refs.append(reference(model, eps, args.seed, steps=100))
        times: dict[str, float] = {}
        for name, ref in refs:
            t = time.perf_counter()
            x_ref = ref(x, y)
            times[name] = time.perf_counter() - t
            assert float((x_ref - x).abs().max()) <= eps + 1e-5, "the reference left the ball"
            rows[name] = (robust_of(model, x_ref, y), times[name])
        ref_name, t_ref = refs[0][0], times[refs[0][0]]
        print(f"\nLinf {e:g}/255")
        print("| attack | robust accuracy | wall s |\n|---|---:|---:|")
        for k, (acc, sec) in rows.items():
            print(f"| {k} | {100 * acc:.1f} % | {sec:.1f} |")
        ratios: dict[str, float] = {}
        checks: dict[str, dict[str, object]] = {}
        for preset in args.presets:
            ens = rows[f"ensemble ({preset})"]
            # members run at the first preset's budgets; a cheaper preset is held to PGD-10 only
            others = [acc for k, (acc, _) in rows.items() if k not in times and not k.startswith("ensemble")
                      and (preset == args.presets[0] or k.startswith("PGD"))]
            at_most_members = all(ens[0] <= acc + 1e-9 for acc in others)
            strongest = min(rows[name][0] for name in times)  # the peers' best, whichever reference
            within = ens[0] <= strongest + 0.01 + 1e-9
            ratios[preset] = ens[1] / t_ref
            print(f"{preset}: <= PGD-10 (and the members): {at_most_members}; <= reference + 1 pt: {within} "
                  f"({100 * (ens[0] - strongest):+.1f} pts); time / reference: {ratios[preset]:.2f}")
            ok &= at_most_members and within and ratios[preset] <= 1
            checks[preset] = {"at_most_pgd_and_members": at_most_members, "within_reference_1pt": within,
                              "minus_reference_pts": 100 * (ens[0] - strongest), "time_ratio": ratios[preset],
                              "time_ratio_to": {name: ens[1] / times[name] for name in list(times)[1:]}}
            for name in list(times)[1:]:
                print(f"  {preset} time / {name}: {ens[1] / times[name]:.2f}")
        out.append({"eps_255": e, "rows": {k: {"robust_accuracy": a, "wall_s": s} for k, (a, s) in rows.items()},
                    "reference": ref_name, "time_ratio": ratios, "checks": checks})
    print("\nall checks hold" if ok else "\nSOME CHECK FAILED")
    write_results(f"autoattack_{args.dataset}", {"dataset": args.dataset, "model": args.model, "n": args.n,
                                                  "seed": args.seed, "clean_accuracy": clean, "results": out,
                                                  "all_checks_hold": ok}, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
