"""``medfool attack NAME``: run one attack on a model and dataset, at one or several budgets.

Writes OUT/results.json (config, seed, versions, per-budget summary, perceptibility, per-image
rows), OUT/adversarial.npz (clean and adversarial images, labels, predictions, success) and
OUT/grid.png (original | adversarial | amplified perturbation with labels and confidences).

Black-box attacks (square, simba: probabilities; hsj, boundary: labels, --labels-only) query
the model through a counter with a per-image budget (--queries); --model may be an ONNX file
written by 'medfool export', or a model served by 'medfool range serve' (-m http://HOST:PORT
--api-key KEY): the client batches, counts every query, waits out 429s, moves to the next key
when one's daily budget is spent, and records what the server's detector refused.
'transfer' crafts a white-box attack (-o base=pgd) on --surrogate
and measures it on --model; 'fooling' evolves images of nothing that the model labels with
>= 99 % confidence, one row per class in fooling_ENCODING.png.

uap and patch are universal: they are crafted on --craft-split images (default train) and
measured on the attacked (--split, default test) images. The patch's budget is its area
(-o area=0.1: at most 10 % of the image); it also writes patch.png, reports natural
cut-and-paste crops of the target class and of the image's own class as baselines, and takes
--surrogate CKPT (transfer from another model) and --sweep [AREA ...] (success as it grows).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.attacks import attack_names
from medfool.attacks.patch.sweep import DEFAULT_AREAS
from medfool.cli.common import (
    URL_MODEL_HELP,
    add_data_options,
    add_range_client_options,
    add_run_options,
    add_worker_options,
    api_keys,
    command_record,
    data_source,
    float_in,
    model_path,
    parse_eps,
    parse_option,
    positive,
    say,
)
from medfool.runs.attack import EXPERIMENTS, AttackJob, run_attack
from medfool.vocab import NORMS, SPLITS

__all__ = ["cmd_attack", "register"]


def cmd_attack(args: argparse.Namespace) -> int:
    options = dict(args.option or [])
    for key in ("norm", "steps", "restarts"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    job = AttackJob(
        name=args.name, model=args.model, data=data_source(args), out=Path(args.out), eps=tuple(args.eps or ()),
        options=options, seed=args.seed, device=args.device, split=args.split, n=args.n, only_class=args.only_class,
        target=args.target, batch_size=args.batch_size, craft_split=args.craft_split, n_craft=args.n_craft,
        surrogate=args.surrogate, sweep=None if args.sweep is None else tuple(args.sweep), queries=args.queries,
        labels_only=args.labels_only, command=command_record(args), workers=args.workers,
        ray_address=args.ray_address, threads_per_worker=args.threads_per_worker, api_keys=api_keys(args),
        run_id=args.run_id)
    run_attack(job, say)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("attack", help="run one attack (white-box, black-box, patch, few-pixel) on a model and dataset",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Attacks: " + ", ".join([*attack_names(), *EXPERIMENTS]) + ". Budgets are pixel-space "
                              "epsilons "
                              "written as k/255; several --eps values give a security curve. Success is counted "
                              "on the images the model classified correctly before the attack.")
    p.add_argument("name", help="attack name: " + ", ".join([*attack_names(), *EXPERIMENTS]))
    p.add_argument("--model", "-m", required=True, type=model_path, help=URL_MODEL_HELP)
    add_data_options(p)
    add_run_options(p)
    p.add_argument("--eps", type=parse_eps, nargs="+", default=None, metavar="EPS",
                   help="one or more budgets, e.g. 2/255 4/255 8/255 (attacks with a budget only)")
    p.add_argument("--norm", choices=NORMS, default=None)
    p.add_argument("--steps", type=positive, default=None)
    p.add_argument("--restarts", type=positive, default=None)
    p.add_argument("--option", "-o", type=parse_option, action="append", metavar="KEY=VALUE",
                   help="any other attack option, e.g. -o kappa=0.5 -o search_steps=3; a patch kept off a "
                        "region of interest: -o region=outside -o box=TOP,LEFT,BOTTOM,RIGHT")
    p.add_argument("--target", default=None, help="a class name or index, or 'least-likely' (default untargeted)")
    p.add_argument("--only-class", default=None, help="attack only images of this class (e.g. a cancer class)")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--craft-split", default="train", choices=SPLITS,
                   help="uap and patch: the split the universal perturbation or patch is crafted on (default train)")
    p.add_argument("--n-craft", type=positive, default=1000, help="uap and patch: images to craft on (default 1000)")
    p.add_argument("--surrogate", default=None, metavar="CKPT", type=model_path,
                   help="patch: also craft the patch on this other model and report its transfer to --model; "
                        "transfer: the model the attack (-o base=pgd) is crafted on")
    p.add_argument("--sweep", type=float_in(0.0, 1.0), nargs="*", default=None, metavar="AREA",
                   help="patch only: also measure success as the patch grows over these area fractions "
                        f"(default {' '.join(f'{a:g}' for a in DEFAULT_AREAS)})")
    p.add_argument("--queries", type=positive, default=None, metavar="N",
                   help="black-box attacks: query budget per image (fooling: in all), the clean query included")
    p.add_argument("--labels-only", action="store_true",
                   help="black-box attacks: the model answers with labels only (decision-based: hsj, boundary)")
    p.add_argument("--n", type=positive, default=256, help="number of images to attack (default 256)")
    p.add_argument("--batch-size", type=positive, default=128)
    p.add_argument("--out", default="medfool-attack", help="output folder (default medfool-attack)")
    add_range_client_options(p)
    add_worker_options(p, "run the attack's chunks of --batch-size images on N Ray workers on this machine (per-image "
                          "attacks; each image's result is the same wherever it runs; universal perturbations, "
                          "patches, transfer and fooling images run in this process)")
    p.set_defaults(func=cmd_attack)
