"""``medfool analyze``: where single pixels matter, and how their change spreads.

  pixel-map    for each image, the largest confidence drop one pixel can cause at every
               location (all locations x the colour-cube corners and random colours)
               -> pixel_map_<i>.png (tile | drop heatmap | pixels that alone fool), pixel_map.json
  locality     one-pixel attack on the images, then each successful pixel moved to every pixel
               at distance 1, 2, 3 ...: how often it still fools  -> locality.json, locality.png
  propagation  one-pixel attack, then per layer the channel-summed activation difference
               between clean and attacked tile  -> propagation_<i>.png, propagation.json

Only images the model classifies correctly are analysed. Confidence is the model's
probability of the true class (or one minus the target's with --target).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import (
    MODEL_HELP,
    add_data_options,
    add_run_options,
    command_record,
    data_source,
    int_in,
    model_path,
    parse_option,
    positive,
    say,
)
from medfool.runs.analyze import KINDS, AnalysisJob, run_analysis
from medfool.vocab import SPLITS

__all__ = ["cmd_analyze", "register"]


def cmd_analyze(args: argparse.Namespace) -> int:
    run_analysis(AnalysisJob(
        kind=args.kind, model=args.model, data=data_source(args), out=Path(args.out), seed=args.seed,
        device=args.device, split=args.split, n=args.n, target=args.target, samples=args.samples,
        stride=args.stride,
        max_distance=args.max_distance, max_images=args.max_images, options=dict(args.option or []),
        command=command_record(args)), say)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("analyze", help="pixel vulnerability maps, locality and propagation maps",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS, help="pixel-map, locality or propagation")
    p.add_argument("--model", "-m", required=True, type=model_path, help=MODEL_HELP)
    add_data_options(p)
    add_run_options(p)
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--n", type=positive, default=4, help="images to analyse (default 4)")
    p.add_argument("--target", default=None, help="a class name or index (default: away from the true class)")
    p.add_argument("--samples", type=int_in(0), default=8,
                   help="pixel-map: random colours tried at each location besides the cube's corners (default 8)")
    p.add_argument("--stride", type=int_in(0), default=0,
                   help="pixel-map: test every STRIDE-th row and column (default 0: every pixel up to 64 px a side, "
                        "then about 64 locations a side, every 4th pixel at 224 px)")
    p.add_argument("--max-distance", type=positive, default=3, help="locality: largest distance (default 3)")
    p.add_argument("--max-images", type=positive, default=4, help="propagation: images drawn (default 4)")
    p.add_argument("--option", "-o", type=parse_option, action="append", metavar="KEY=VALUE",
                   help="one-pixel attack options for locality and propagation, e.g. -o generations=30")
    p.add_argument("--out", default="medfool-analyze", help="output folder (default medfool-analyze)")
    p.set_defaults(func=cmd_analyze)
