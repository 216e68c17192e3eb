"""``medfool wsi``: whole slides. ``build`` writes mosaic slides of real tissue as pyramidal
TIFFs; ``predict`` reads one slide through the whole pipeline (tissue, tiles, tile model,
aggregator) and writes its diagnosis and heat map."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfool.cli.common import MODEL_HELP, add_data_options, data_source, float_in, int_in, model_path, say
from medfool.vocab import DEVICE_CHOICES

__all__ = ["register"]


def slide_model_path(text: str) -> str:
    """A slide model folder ('medfool wsi train' wrote) as it is, else any tile model."""
    return text if (Path(text) / "slide_model.json").is_file() else model_path(text)


slide_model_path.__name__ = "model"


def cmd_build(args: argparse.Namespace) -> int:
    from medfool.runs.wsi import BuildJob, run_build

    run_build(BuildJob(data_source(args), Path(args.out), split=args.split, n_benign=args.benign,
                       n_malignant=args.malignant, side=args.side, compression=args.compression,
                       quality=args.quality, seed=args.seed), say)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from medfool.runs.wsi import PredictJob, run_predict

    run_predict(PredictJob(Path(args.slide), args.model, Path(args.out), aggregator=args.aggregator,
                           threshold=args.threshold, min_tissue=args.min_tissue, device=args.device), say)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from medfool.runs.wsi import TrainJob, run_train

    run_train(TrainJob(Path(args.slides), args.model, Path(args.out), val=Path(args.val) if args.val else None,
                       epochs=args.epochs, min_tissue=args.min_tissue, seed=args.seed, device=args.device), say)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("wsi", help="whole slides: build slides of real tissue, predict a slide's diagnosis",
                       description="Whole-slide images (pyramidal TIFF, SVS; needs the wsi extra: pip install "
                                   "'medfool[wsi]'). See 'medfool wsi SUBCOMMAND --help'.")
    wsub = p.add_subparsers(dest="wsi_command", metavar="SUBCOMMAND")
    wsub.required = True
    b = wsub.add_parser("build", help="write mosaic slides of a dataset's real tiles as pyramidal TIFFs",
                        description="Benign slides of benign tiles, malignant slides with a region of one cancer "
                                    "class, on glass with margins, from one split of a dataset with a benign and "
                                    "malignant (critical) classes, e.g. -d lc25000_lung --size 64. Writes OUT/*.tif "
                                    "and OUT/slides.json (labels, cancer class, each slide's cell map).")
    add_data_options(b)
    b.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="the split whose tiles make the slides (train slides from train tiles only)")
    b.add_argument("--benign", type=int_in(0), default=10, help="benign slides (default 10)")
    b.add_argument("--malignant", type=int_in(0), default=10, help="malignant slides (default 10)")
    b.add_argument("--side", type=int_in(256), default=4096, help="pixels a side at level 0 (default 4096)")
    b.add_argument("--compression", default="jpeg", choices=("jpeg", "lossless"),
                   help="tile compression (default jpeg)")
    b.add_argument("--quality", type=int_in(1, 100), default=90, help="JPEG quality (default 90)")
    b.add_argument("--out", default="medfool-slides", help="output folder (default medfool-slides)")
    b.set_defaults(func=cmd_build)
    t = wsub.add_parser("train", help="attention MIL on slides with slide labels only",
                        description="Train an attention head (Ilse et al., ICML 2018) over the tile model's deep "
                                    "features on the slides 'medfool wsi build' wrote (slide labels only; the tile "
                                    "model stays frozen). Writes OUT/slide_model.json, OUT/attention.safetensors and "
                                    "OUT/metrics.json; 'medfool wsi predict -m OUT' uses it.")
    t.add_argument("slides", help="a folder 'medfool wsi build' wrote (train split)")
    t.add_argument("--model", "-m", required=True, type=model_path, help="the tile model: " + MODEL_HELP)
    t.add_argument("--val", default=None, metavar="FOLDER", help="slides to report accuracy on (val or test split)")
    t.add_argument("--epochs", type=int_in(1), default=40, help="passes over the slides (default 40)")
    t.add_argument("--min-tissue", type=float_in(0.0, 1.0), default=0.5)
    t.add_argument("--seed", type=int_in(0), default=0)
    t.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    t.add_argument("--out", default="medfool-slide-model", help="output folder (default medfool-slide-model)")
    t.set_defaults(func=cmd_train)
    q = wsub.add_parser("predict", help="a slide's diagnosis and heat map",
                        description="Read SLIDE through the whole pipeline: CLAM's tissue mask, tiles of the model's "
                                    "input size at level 0 (those with at least --min-tissue tissue), the tile "
                                    "model, and the aggregator (max: Campanella et al. 2019; mean). Writes "
                                    "OUT/prediction.json and OUT/heatmap.png.")
    q.add_argument("slide", help="a slide file (pyramidal TIFF, SVS, ...)")
    q.add_argument("--model", "-m", required=True, type=slide_model_path,
                   help="the tile model (" + MODEL_HELP + "), or a slide model folder 'medfool wsi train' wrote")
    q.add_argument("--aggregator", default="max", choices=("max", "mean"),
                   help="with a tile model: the most malignant tile (max, default) or the mean")
    q.add_argument("--threshold", type=float_in(0.0, 1.0), default=0.5,
                   help="probability of malignancy at which the slide reads malignant (default 0.5)")
    q.add_argument("--min-tissue", type=float_in(0.0, 1.0), default=0.5,
                   help="share of a tile that must be tissue to be read (default 0.5)")
    q.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    q.add_argument("--out", default="medfool-slide", help="output folder (default medfool-slide)")
    q.set_defaults(func=cmd_predict)
