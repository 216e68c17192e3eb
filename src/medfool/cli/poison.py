"""``medfool poison``: training-process tampering.

``poison backdoor`` builds a poisoned training set (BadNets patch, blended, stain-blob or
pen-mark trigger; all-to-one, all-to-all or clean-label), trains a clean and a poisoned model
with the normal training code and the same seed, runs the backdoor detectors, retrains
without what they flagged, and optionally sweeps the poison rate. ``poison availability``
measures the accuracy lost per poison rate to error-maximising noise or label flipping.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medfool.attacks.poisoning.availability import METHODS, AvailabilityConfig
from medfool.attacks.poisoning.backdoor import BackdoorConfig
from medfool.attacks.poisoning.triggers import COLOURS, KINDS, POSITIONS, SHAPES, parse_position
from medfool.cli.common import (
    add_data_options,
    add_run_options,
    command_record,
    data_source,
    float_in,
    parse_eps,
    positive,
    say,
)
from medfool.models.train import TrainConfig
from medfool.runs.poisoning import (
    DEFAULT_SWEEP,
    DETECTORS,
    SAMPLE_DETECTORS,
    AvailabilityJob,
    BackdoorJob,
    BackdoorPlan,
    TriggerSpec,
    retrainable,
    run_availability_job,
    run_backdoor_job,
)

__all__ = ["cmd_availability", "cmd_backdoor", "register"]

log = logging.getLogger("medfool")


def _rates(text: str) -> tuple[float, ...]:
    """'0.5%,1%,0.02' -> (0.005, 0.01, 0.02)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(float(part[:-1]) / 100 if part.endswith("%") else float(part))
        except ValueError:
            raise argparse.ArgumentTypeError(f"rates must be numbers like 0.05 or 5%, got {part!r}") from None
    return tuple(out)


def _names(text: str, known: tuple[str, ...]) -> tuple[str, ...]:
    if text in ("", "none"):
        return ()
    if text == "all":
        return known
    short = {"ac": "activation-clustering", "spectral": "spectral-signatures", "nc": "neural-cleanse",
             "nc-ac": "nc-guided-clustering"}
    names = tuple(short.get(n.strip(), n.strip()) for n in text.split(","))
    bad = [n for n in names if n not in known]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown name {bad[0]!r} (known: {', '.join(known)}, all, none)")
    return names


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(arch=args.arch, epochs=args.epochs, seed=args.seed)


def cmd_backdoor(args: argparse.Namespace) -> int:
    trigger = TriggerSpec(args.trigger, size=args.trigger_size, shape=args.shape, colour=args.colour,
                          position=parse_position(args.position), alpha=args.alpha)
    bd = BackdoorConfig(rate=args.rate, mode="all-to-all" if args.all_to_all else "all-to-one",
                        clean_label=args.clean_label, clean_label_eps=args.clean_label_eps)
    plan = BackdoorPlan(detectors=args.detect, retrain=tuple(n for n in args.retrain if n in retrainable(args.detect)),
                        sweep=args.sweep or (), cleanse_steps=args.cleanse_steps)
    run_backdoor_job(BackdoorJob(data_source(args), Path(args.out), trigger, bd, args.target, plan,
                                 _train_config(args), device=args.device, seed=args.seed,
                                 command=command_record(args)), say=say)
    return 0


def cmd_availability(args: argparse.Namespace) -> int:
    cfg = AvailabilityConfig(method=args.method, eps=args.eps, steps=args.steps)
    run_availability_job(AvailabilityJob(data_source(args), Path(args.out), cfg, tuple(args.rates),
                                         _train_config(args), device=args.device, seed=args.seed,
                                         command=command_record(args)), say=say)
    return 0


def _add_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="small_cnn", help="architecture of every model trained (default small_cnn)")
    p.add_argument("--epochs", type=positive, default=None, help="maximum epochs per model (default: as medfool train)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    top = sub.add_parser("poison", help="training-set tampering: backdoors, availability poisoning, detection",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = top.add_subparsers(dest="poison_kind", metavar="KIND")
    kinds.required = True
    _add_backdoor(kinds)
    _add_availability(kinds)


def _add_backdoor(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = kinds.add_parser(
        "backdoor", help="poison with a trigger, retrain, measure ASR, detect, retrain without the flagged",
        description="Poison a seeded, exact share of the training set with a trigger; train a clean and a poisoned "
                    "model with the normal training loop and the same seed; report clean accuracy and attack success "
                    "rate (ASR: triggered test images of other classes read as the target); run the detectors "
                    "(activation clustering, spectral signatures, STRIP, Neural Cleanse) with their TPR/FPR; retrain "
                    "without the flagged samples. Models are kept in OUT, so a rerun resumes.")
    add_data_options(p)
    add_run_options(p)
    p.add_argument("--trigger", default="patch", choices=KINDS,
                   help="patch: BadNets square/checker/cross; blend: noise mixed in at --alpha; stain: a "
                        "haematoxylin blob; pen: a marker stroke (default patch)")
    p.add_argument("--shape", default="checker", choices=SHAPES, help="patch shape (default checker)")
    p.add_argument("--trigger-size", type=positive, default=None, help="trigger side in pixels (default: by kind)")
    p.add_argument("--colour", default=None, help=f"#rrggbb or one of {', '.join(COLOURS)}")
    p.add_argument("--position", default="bottom-right",
                   help=f"row,col or one of {', '.join(POSITIONS)} (default bottom-right)")
    p.add_argument("--alpha", type=float_in(0.0, 1.0), default=0.1, help="blend trigger opacity (default 0.1)")
    p.add_argument("--target", default="auto",
                   help="class the trigger should produce (default auto: a benign/normal class; multi-label: "
                        "'none' = no finding)")
    p.add_argument("--all-to-all", action="store_true", help="class y -> y+1 instead of one target")
    p.add_argument("--clean-label", action="store_true",
                   help="poison target-class images only, labels kept (Turner et al.)")
    p.add_argument("--clean-label-eps", type=parse_eps, default=8 / 255,
                   help="clean-label: adversarial perturbation before the trigger (default 8/255; 0 = none)")
    p.add_argument("--rate", type=float_in(0.0, 1.0), default=0.05,
                   help="share of the training set poisoned: exactly round(rate x N) images (default 0.05)")
    p.add_argument("--detect", type=lambda t: _names(t, DETECTORS), default=DETECTORS,
                   help="detectors: comma list of activation-clustering (ac), spectral-signatures (spectral), strip, "
                        "neural-cleanse (nc); all or none (default all)")
    p.add_argument("--retrain", type=lambda t: _names(t, (*SAMPLE_DETECTORS, "neural-cleanse")),
                   default=(*SAMPLE_DETECTORS, "neural-cleanse"),
                   help="retrain without the samples these detectors flagged (nc-guided-clustering, nc-ac: the "
                        "smaller activation cluster of the labels Neural Cleanse finds infected; neural-cleanse: "
                        "unlearning with its reversed trigger); all or none (default all that ran)")
    p.add_argument("--sweep", nargs="?", type=_rates, const=DEFAULT_SWEEP, default=None,
                   help="also train at these poison rates (default 0.5%%,1%%,2%%,5%%,10%%) -> sweep.png")
    p.add_argument("--cleanse-steps", type=positive, default=300,
                   help="Neural Cleanse optimisation steps (default 300)")
    _add_training(p)
    p.add_argument("--out", default="medfool-backdoor", help="output folder (default medfool-backdoor)")
    p.set_defaults(func=cmd_backdoor)


def _add_availability(kinds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = kinds.add_parser(
        "availability", help="accuracy lost per poison rate (error-maximising noise, label flipping)",
        description="Poison a share of the training set to lower accuracy for everyone: error-max (class-targeted "
                    "PGD noise against a clean model, labels kept; Fowl et al., in the spirit of Yang et al.) or "
                    "label-flip (a random other class). Trains one model per rate with the normal training loop.")
    add_data_options(p)
    add_run_options(p)
    p.add_argument("--method", default="error-max", choices=METHODS)
    p.add_argument("--rates", type=_rates, default=(0.1, 0.25, 0.5, 1.0),
                   help="poison rates, comma separated (default 10%%,25%%,50%%,100%%)")
    p.add_argument("--eps", type=parse_eps, default=8 / 255, help="error-max noise budget, Linf (default 8/255)")
    p.add_argument("--steps", type=positive, default=10, help="error-max PGD steps (default 10)")
    _add_training(p)
    p.add_argument("--out", default="medfool-availability", help="output folder (default medfool-availability)")
    p.set_defaults(func=cmd_availability)
