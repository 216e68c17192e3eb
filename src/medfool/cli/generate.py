"""``medfool generate``: generative threats. ``train`` fits a DCGAN to one class of a dataset and
measures how real its fakes look and whether the audited model believes them."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import MODEL_HELP, add_data_options, data_source, float_in, int_in, model_path, say
from medfool.vocab import DEVICE_CHOICES

__all__ = ["register"]


def cmd_train(args: argparse.Namespace) -> int:
    from medfool.runs.generate import GenerateJob, run_generate

    run_generate(GenerateJob(data_source(args), args.model, Path(args.out), cls=args.cls, n_fakes=args.n,
                             epochs=args.epochs, max_minutes=args.max_minutes, seed=args.seed,
                             device=args.device), say)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("generate", help="generative threats: GAN fakes and how real they look",
                       description="Generative threats of the survey. See 'medfool generate SUBCOMMAND --help'.")
    gsub = p.add_subparsers(dest="generate_command", metavar="SUBCOMMAND")
    gsub.required = True
    t = gsub.add_parser("train", help="a DCGAN on one class; its fakes, FID, two-sample test, copies",
                        description="Train a small DCGAN (Radford et al., ICLR 2016) on the training images of one "
                                    "class (--class) and measure its fakes against held-out real images of that "
                                    "class from the test split: FID and a classifier two-sample test (50 %%: cannot "
                                    "tell them apart) in the deep-feature space of --model (no downloaded Inception "
                                    "weights), the distance of every image to its nearest training image (a fake at "
                                    "0 copies one), each beside the same figure for real images; and the share of "
                                    "fakes --model reads as the class, with confidence >= 0.9. Writes OUT/fakes.npz, "
                                    "OUT/fakes.png, OUT/generator.safetensors and OUT/results.json.")
    add_data_options(t)
    t.add_argument("--class", dest="cls", default=None, metavar="NAME",
                   help="the class to learn (name or index; default: all images)")
    t.add_argument("--model", "-m", required=True, type=model_path,
                   help="the audited model, whose features measure realism: " + MODEL_HELP)
    t.add_argument("--n", type=int_in(8), default=500, help="fakes to generate and real images to compare (500)")
    t.add_argument("--epochs", type=int_in(1), default=60, help="passes over the class's images at most (60)")
    t.add_argument("--max-minutes", type=float_in(0.0, 1e6), default=15.0,
                   help="stop training after this long (default 15)")
    t.add_argument("--seed", type=int_in(0), default=0)
    t.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    t.add_argument("--out", default="medfool-generate", help="output folder (default medfool-generate)")
    t.set_defaults(func=cmd_train)
