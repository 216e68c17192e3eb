"""``medfool defend``: build a defended model (robust training, ensembles, input transforms,
detectors, randomized smoothing) and measure it against the naive and the adaptive attacker."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Any

from medfool.cli.common import (
    MODEL_HELP,
    add_data_options,
    add_run_options,
    add_worker_options,
    data_source,
    float_in,
    model_path,
    parse_eps,
    positive,
    say,
)
from medfool.defences.detectors import DETECTORS
from medfool.defences.robust_training import METHODS, RobustObjective
from medfool.errors import ConfigError
from medfool.models import architectures
from medfool.models.preprocess import PREPROCESS, parse_spec
from medfool.models.train import TrainConfig
from medfool.runs.defend import (
    AdvTrainJob,
    DefendJob,
    Measure,
    run_adv_train,
    run_defend,
    write_ensemble,
    write_transformed,
)
from medfool.runs.train import choose_spread
from medfool.vocab import COMBINE, PRESET_NAMES

__all__ = ["cmd_adv_train", "cmd_certify", "cmd_detector", "cmd_ensemble", "cmd_evaluate", "cmd_transform",
           "register"]


def cmd_adv_train(args: argparse.Namespace) -> int:
    objective = RobustObjective(method=args.method, eps=args.eps, steps=args.steps, beta=args.beta,
                                sigma=args.sigma, eot=args.eot, val_images=args.val_images, seed=args.seed)
    cfg = TrainConfig(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      patience=args.patience, seed=args.seed)
    spread = choose_spread(args.workers, args.ray_address, args.threads_per_worker, args.device, say)
    run_adv_train(AdvTrainJob(data_source(args), objective, cfg, Path(args.out) if args.out else None, args.device,
                              spread), say=say)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("defend", help="build defended models and measure them against adaptive attackers",
                       description="Defences against adversarial images. Each subcommand writes a model that every "
                                   "attack, the audit and 'medfool export' accept. See 'medfool defend SUBCOMMAND "
                                   "--help'.")
    dsub = p.add_subparsers(dest="defence", metavar="SUBCOMMAND")
    dsub.required = True
    _add_adv_train(dsub)
    _add_transform(dsub)
    _add_ensemble(dsub)
    _add_evaluate(dsub)
    _add_detector(dsub)
    _add_certify(dsub)


def _add_adv_train(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = dsub.add_parser("adv-train", help="robust training: PGD (Madry), TRADES, fast FGSM, Gaussian noise",
                        description="Train a model on adversarial examples with the normal training loop. pgd: "
                                    "Madry et al. 2018; trades: Zhang et al. 2019; fgsm-rs: Wong et al. 2020 (one step "
                                    "from a random start); noise: Gaussian augmentation, the base model of randomized "
                                    "smoothing (Cohen et al. 2019). Each epoch logs clean and PGD-10 robust validation "
                                    "accuracy; epochs are selected on their mean (noise: on validation accuracy under "
                                    "Gaussian noise at --sigma, what the smoothed model votes over). Writes "
                                    "OUT/model.safetensors.")
    add_data_options(q)
    add_run_options(q)
    q.add_argument("--method", default="pgd", choices=METHODS)
    q.add_argument("--eps", type=parse_eps, default=8 / 255, help="Linf budget, k/255 (default 8/255)")
    q.add_argument("--steps", type=positive, default=7, help="PGD / TRADES steps per batch (default 7)")
    q.add_argument("--beta", type=float_in(0.0, 1000.0), default=6.0, help="TRADES trade-off (default 6)")
    q.add_argument("--sigma", type=float_in(1e-6, 10.0), default=0.25, help="noise standard deviation (noise)")
    q.add_argument("--eot", action="store_true",
                   help="EOT over stains: jitter each batch's H&E stains (Tellez et al. 2019: per image and stain, "
                        "scale and shift of up to 0.05) before crafting its adversarial examples, so the robustness "
                        "learnt holds across scanners. RGB histology only (refused for grayscale data); not with "
                        "--method noise, which crafts nothing")
    q.add_argument("--val-images", type=int, default=256, help="validation images for the per-epoch robust check")
    q.add_argument("--arch", default="small_cnn", help=f"architecture (known: {', '.join(architectures())})")
    q.add_argument("--epochs", type=positive, default=None)
    q.add_argument("--batch-size", type=positive, default=128)
    q.add_argument("--lr", type=float_in(1e-12, 100.0), default=None,
                   help="AdamW peak learning rate (default: 3e-3 for medfool's CNNs, 1e-3 for the MONAI networks)")
    q.add_argument("--patience", type=positive, default=10)
    q.add_argument("--out", default=None, help="output folder (default runs/DATASET-ARCH-METHOD-seedN)")
    add_worker_options(q)
    q.set_defaults(func=cmd_adv_train)


def _add_transform(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = dsub.add_parser("transform", help="put input transforms (median, JPEG, bit depth...) in front of a model",
                        description="Write a copy of the model that cleans every input first. Transforms: "
                                    f"{', '.join(PREPROCESS)}; options as NAME:KEY=VALUE, e.g. jpeg:quality=60, "
                                    "median:size=3, bit-depth:bits=4, blur:sigma=1, resize-pad:max_shrink=4, "
                                    "stain-norm (Macenko). Deployed, JPEG and bit-depth rounding give zero gradients; "
                                    "'medfool defend evaluate' attacks them with BPDA (and EOT for random ones).")
    q.add_argument("--model", "-m", required=True, type=model_path, help="checkpoint to defend (or its run folder)")
    q.add_argument("--transform", "-t", action="append", required=True, type=parse_transform,
                   help="a transform (repeat to chain)")
    q.add_argument("--out", "-o", required=True, help="output .safetensors")
    q.set_defaults(func=cmd_transform)


def _add_ensemble(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = dsub.add_parser("ensemble", help="one model from several: logits averaged or majority vote",
                        description="Combine trained models (architectures or seeds; Paul et al., ISBI 2020) into one "
                                    "checkpoint that attacks, the audit and export take as one model.")
    q.add_argument("--model", "-m", action="append", required=True, type=model_path,
                   help="a member checkpoint or run folder (repeat, >= 2)")
    q.add_argument("--combine", default="mean", choices=COMBINE, help="mean of logits, or majority vote")
    q.add_argument("--out", "-o", required=True, help="output .safetensors")
    q.set_defaults(func=cmd_ensemble)


def _add_evaluate(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = dsub.add_parser("evaluate", help="defended models against the naive and the adaptive attacker",
                        description="For each defended model and budget: robust accuracy under the naive attacker "
                                    "(the ensemble's gradient attacks, defence ignored), the masking check (Square, "
                                    "gradient-free) and the adaptive attacker (the whole ensemble with BPDA through "
                                    "transforms and votes, EOT over random transforms; per image the best of all "
                                    "three), beside the undefended --baseline under the ensemble. Writes "
                                    "OUT/defence.json as each defence finishes; a rerun resumes.")
    q.add_argument("--model", "-m", action="append", default=[], type=model_path,
                   help="a defended checkpoint or run folder (repeat)")
    q.add_argument("--transform", "-t", action="append", default=[], type=parse_transform,
                   help="an input transform applied to --baseline (repeat: one defence each)")
    q.add_argument("--baseline", "-b", default=None, type=model_path, help="the undefended checkpoint or run folder")
    add_data_options(q)
    add_run_options(q)
    add_budget_options(q)
    q.add_argument("--preset", default="standard", choices=PRESET_NAMES,
                   help="attack ensemble preset: standard (AutoAttack's own budgets: 100 steps, 9 targets, 5,000 "
                        "Square queries; the default, the figure to sign) or fast (20 steps, 3 targets, 500 queries; "
                        "a quicker first look that can overstate robustness)")
    q.add_argument("--eot", type=positive, default=8, help="EOT draws per step for random defences (default 8)")
    q.add_argument("--out", "-o", required=True, help="output folder")
    add_worker_options(q, "run the attackers on N Ray workers on this machine, chunks of the sample at a time (each "
                          "image's result is the same wherever it runs)")
    q.set_defaults(func=cmd_evaluate)


def _add_detector(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = dsub.add_parser("detector", help="adversarial-image detectors: naive and adaptive detection rates",
                        description="Fit detectors on a model's features (mahalanobis: Lee et al. 2018; kd-bu: "
                                    "Feinman et al. 2017; lid: Ma et al. 2018; binary: Ma et al. 2021; squeeze: "
                                    "Xu et al. 2018), set each threshold at 5 %% false positives on clean validation "
                                    "images, then report ROC-AUC and true-positive rate against PGD (naive) and "
                                    "against a joint attack on detector + model (adaptive). Writes "
                                    "OUT/detectors.json.")
    q.add_argument("--model", "-m", required=True, type=model_path, help=MODEL_HELP)
    q.add_argument("--kind", "-k", action="append", choices=DETECTORS, default=None,
                   help="detector (repeat; default all)")
    add_data_options(q)
    add_run_options(q)
    add_budget_options(q, default=("8/255",))
    q.add_argument("--train-images", type=positive, default=1000, help="training images to fit on (default 1000)")
    q.add_argument("--steps", type=positive, default=100, help="adaptive attack steps (default 100)")
    q.add_argument("--out", "-o", required=True, help="output folder")
    q.set_defaults(func=cmd_detector)


def _add_certify(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = dsub.add_parser("certify", help="randomized smoothing: certified accuracy at L2 radii",
                        description="Cohen et al. (ICML 2019) CERTIFY on test images: n0 noisy copies pick the "
                                    "class, --samples copies bound its probability (Clopper-Pearson, confidence "
                                    "1 - alpha), the radius is sigma x Phi^-1(pA); pA <= 1/2 abstains. Train the base "
                                    "model with 'medfool defend adv-train --method noise --sigma S'. Radii in [0, 1] "
                                    "pixel units (L2 over all pixels). Writes OUT/certify.json.")
    q.add_argument("--model", "-m", required=True, type=model_path, help=MODEL_HELP)
    add_data_options(q)
    add_run_options(q)
    q.add_argument("--sigma", type=float_in(1e-6, 10.0), default=None,
                   help="noise level (default: the one a model trained with --method noise was trained with; "
                        "required for any other model)")
    q.add_argument("--radius", action="append", type=float_in(0.0, 100.0), default=None,
                   help="L2 radius to report (repeat; default 0, 0.25, 0.5, 1)")
    q.add_argument("--n", type=positive, default=100, help="test images (default 100)")
    q.add_argument("--n0", type=positive, default=100)
    q.add_argument("--samples", type=positive, default=1000, help="noisy copies for the bound (default 1000)")
    q.add_argument("--alpha", type=float_in(1e-9, 0.5), default=0.001)
    q.add_argument("--out", "-o", required=True, help="output folder")
    q.set_defaults(func=cmd_certify)


def add_budget_options(p: argparse.ArgumentParser, default: tuple[str, ...] = ("2/255", "8/255")) -> None:
    p.add_argument("--eps", action="append", type=parse_eps, default=None,
                   help=f"Linf budget, k/255 (repeat; default {' and '.join(default)})")
    p.add_argument("--n", type=positive, default=200, help="test images attacked (default 200)")
    p.set_defaults(eps_default=tuple(parse_eps(e) for e in default))


def parse_transform(text: str) -> dict[str, object]:
    try:
        return parse_spec(text, lambda v: float(Fraction(v)))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_transform(args: argparse.Namespace) -> int:
    write_transformed(args.model, args.transform, Path(args.out), say=say)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    write_ensemble(args.model, args.combine, Path(args.out), say=say)
    return 0


def _job(args: argparse.Namespace, action: Measure, models: list[str], **extra: Any) -> DefendJob:
    eps = tuple(args.eps or args.eps_default) if hasattr(args, "eps_default") else ()
    return DefendJob(action, data_source(args), Path(args.out), models=tuple(models), eps=eps, n=args.n,
                     seed=args.seed, device=args.device, **extra)


def cmd_evaluate(args: argparse.Namespace) -> int:
    job = _job(args, "evaluate", args.model, baseline=args.baseline, transforms=tuple(args.transform),
               preset=args.preset, eot=args.eot, workers=args.workers, ray_address=args.ray_address,
               threads_per_worker=args.threads_per_worker)
    say(f"wrote {run_defend(job, say=say)}")
    return 0


def cmd_detector(args: argparse.Namespace) -> int:
    job = _job(args, "detector", [args.model], kinds=tuple(args.kind or ()), train_images=args.train_images,
               steps=args.steps)
    say(f"wrote {run_defend(job, say=say)}")
    return 0


def cmd_certify(args: argparse.Namespace) -> int:
    job = _job(args, "certify", [args.model], sigma=args.sigma, n0=args.n0, samples=args.samples, alpha=args.alpha,
               **({"radii": tuple(args.radius)} if args.radius else {}))
    say(f"wrote {run_defend(job, say=say)}")
    return 0
