"""A random defence judged as deployed: the adaptive attacker's robust accuracy when its attacks
decide on the EOT mean (before) and on the deployed model's own draw (now).

Usage:  MEDFOOL_DATA_DIR=../shared/data python benchmarks/random_defence.py --model CKPT
        [--dataset NAME] [--n 64] [--eps 2 8] [--eot 8] [--preset fast] [--threads 2] [--json OUT]
        (writes benchmarks/results/random_defence_DATASET.json unless --json names another file)

Resize-pad (Xie et al., ICLR 2018; shrink by 0-4 pixels, pad back at a random offset) is put in
front of the model. Deployed, it draws per image from a key of the image's pixels; attacked
adaptively, each forward pass averages ``eot`` fresh draws. Before, an attack stopped on an
image as soon as the EOT mean misread it, and the deployed draw then often still read it
right: the image counted as robust although the attack had given up on it. Now the attacks'
decisions are the deployed model's, so they go on until the deployed model is fooled. Both
runs use the same images and seed; robust accuracy is over all ``n`` images, judged as deployed.
"""

from __future__ import annotations

import argparse
import time

import torch

from medfool.attacks.ensemble import members
from medfool.data import load_dataset
from medfool.defences.evaluation import judge, worst_case
from medfool.defences.input_transforms import with_transforms
from medfool.models import load_classifier
from medfool.utils.stats import accuracy_breakdown
from record import write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--eps", type=float, nargs="+", default=[2.0, 8.0])
    ap.add_argument("--eot", type=int, default=8)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base, _ = load_classifier(args.model)
    model = with_transforms(base, [{"name": "resize-pad", "max_shrink": 4}]).eval()
    ds = load_dataset(args.dataset or base.meta.dataset)
    test = ds.split("test")
    ids = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[: args.n].sort().values.tolist()
    x, y = test.get(ids)
    clean = judge(model, x, y)
    out: dict[str, object] = {"model": args.model, "dataset": ds.info.name, "n": len(ids), "eot": args.eot,
                              "preset": args.preset, "seed": args.seed, "clean": float(clean.float().mean()),
                              "rows": []}
    for eps in args.eps:
        attacks = members(args.preset, model.task, eps / 255, "linf")
        row: dict[str, object] = {"eps_255": eps}
        for label, decide_as_deployed in (("before", False), ("now", True)):
            start = time.perf_counter()
            torch.manual_seed(args.seed)  # the attacks draw from their own per-image streams; this is for anything else
            # before: decisions read from the EOT mean
            with model.adaptive(eot=args.eot, judged_as_deployed=decide_as_deployed) as view:
                held, _ = worst_case(view, model, attacks, x, y, ids, args.seed)
            b = accuracy_breakdown(held.tolist(), y.tolist(), ds.info.class_names)
            row[label] = {"robust": b["accuracy"], "ci95": b["ci95"], "balanced": b["balanced"],
                          "constant": b["constant"], "per_class": b.get("per_class"),
                          "wall_s": time.perf_counter() - start}
            print(f"{eps:g}/255 {label}: adaptive robust accuracy {b['accuracy']:.3f} "
                  f"[{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}] balanced {b['balanced']:.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        out["rows"].append(row)  # type: ignore[union-attr]
    write_results(f"random_defence_{ds.info.name}", out, args.json)


if __name__ == "__main__":
    main()
