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

    run_train(TrainJob(Path(args.slides), args.model, Path(args.out), aggregator=args.aggregator,
                       val=Path(args.val) if args.val else None,
                       epochs=args.epochs, min_tissue=args.min_tissue, seed=args.seed, device=args.device), say)
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from medfool.runs.wsi_attack import AttackSpec, SlideAttackJob, run_slide_attack

    spec = AttackSpec(args.attack, pixels=args.pixels, order=args.order, population=args.population,
                      generations=args.generations, max_tiles=args.max_tiles, patch=args.patch_size,
                      fraction=args.fraction, eps=args.eps / 255, seed=args.seed)
    run_slide_attack(SlideAttackJob(Path(args.slide), args.model, Path(args.out), spec, aggregator=args.aggregator,
                                    threshold=args.threshold, min_tissue=args.min_tissue, quality=args.quality,
                                    device=args.device), say)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from medfool.runs.wsi_audit import SlideAuditJob, run_slide_audit

    run_slide_audit(SlideAuditJob(Path(args.slides), args.model, Path(args.out), attacks=args.attacks,
                                  aggregator=args.aggregator, threshold=args.threshold, min_tissue=args.min_tissue,
                                  limit=args.limit, seed=args.seed, device=args.device), say)
    return 0


def _pipeline_options(p: argparse.ArgumentParser) -> None:
    """The options every command that reads a slide through a model shares."""
    p.add_argument("--model", "-m", required=True, type=slide_model_path,
                   help="the tile model (" + MODEL_HELP + "), or a slide model folder 'medfool wsi train' wrote")
    p.add_argument("--aggregator", default="max", choices=("max", "mean"),
                   help="with a tile model: the most malignant tile (max, default) or the mean")
    p.add_argument("--threshold", type=float_in(0.0, 1.0), default=None,
                   help="probability of malignancy at which the slide reads malignant (default: the slide model's "
                        "own, chosen on its training slides; 0.5 for a bare tile model)")
    p.add_argument("--min-tissue", type=float_in(0.0, 1.0), default=0.5,
                   help="share of a tile that must be tissue to be read (default 0.5)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)


def _attack_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pixels", type=int_in(1), default=1, help="pixels: how many pixels may change (default 1)")
    p.add_argument("--order", default="guided", choices=("guided", "uniform"),
                   help="pixels: try tiles by the aggregator's own signal (guided, default) or at random")
    p.add_argument("--population", type=int_in(4), default=100, help="pixels: DE population per tile (default 100)")
    p.add_argument("--generations", type=int_in(0), default=10, help="pixels: DE generations per tile (default 10)")
    p.add_argument("--max-tiles", type=int_in(1), default=20, help="pixels: tiles tried at most (default 20)")
    p.add_argument("--patch-size", type=int_in(1), default=16, help="patch: side in pixels (default 16)")
    p.add_argument("--fraction", type=float_in(0.0, 1.0), default=0.01,
                   help="fraction: share of tissue tiles perturbed (default 0.01)")
    p.add_argument("--eps", type=float_in(0.0, 255.0), default=8.0, help="fraction: L-inf budget in k/255 (default 8)")
    p.add_argument("--quality", type=int_in(1, 100), default=None,
                   help="JPEG quality of the re-encoded copy (default: the source's, from slides.json beside it, "
                        "else 90)")
    p.add_argument("--seed", type=int_in(0), default=0)


def _add_build(wsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    b.add_argument("--seed", type=int_in(0), default=0, help="seed of the slides' layout and tiles (default 0)")
    b.add_argument("--out", default="medfool-slides", help="output folder (default medfool-slides)")
    b.set_defaults(func=cmd_build)


def _add_train(wsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = wsub.add_parser("train", help="a slide model from slides with slide labels only",
                        description="A slide model over a frozen tile model, from the slides 'medfool wsi build' "
                                    "wrote (slide labels only): attention MIL (Ilse et al., ICML 2018; default) "
                                    "learns an attention head over the tile model's deep features; max (Campanella "
                                    "et al. 2019) and mean pooling learn nothing but their operating threshold, the "
                                    "one with the best balanced accuracy on the training slides (max pooling over "
                                    "thousands of tiles reads a benign slide malignant when any one tile is misread "
                                    "at 0.5). Writes OUT/slide_model.json (with attention.safetensors) and "
                                    "OUT/metrics.json; 'medfool wsi predict|attack|audit -m OUT' use it.")
    t.add_argument("slides", help="a folder 'medfool wsi build' wrote (train split)")
    t.add_argument("--model", "-m", required=True, type=model_path, help="the tile model: " + MODEL_HELP)
    t.add_argument("--aggregator", default="attention", choices=("attention", "max", "mean"),
                   help="attention MIL (default), or max / mean pooling with a chosen threshold")
    t.add_argument("--val", default=None, metavar="FOLDER", help="slides to report accuracy on (val or test split)")
    t.add_argument("--epochs", type=int_in(1), default=40, help="passes over the slides (default 40)")
    t.add_argument("--min-tissue", type=float_in(0.0, 1.0), default=0.5)
    t.add_argument("--seed", type=int_in(0), default=0)
    t.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    t.add_argument("--out", default="medfool-slide-model", help="output folder (default medfool-slide-model)")
    t.set_defaults(func=cmd_train)


def _add_predict(wsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = wsub.add_parser("predict", help="a slide's diagnosis and heat map",
                        description="Read SLIDE through the whole pipeline: CLAM's tissue mask, tiles of the model's "
                                    "input size at level 0 (those with at least --min-tissue tissue), the tile "
                                    "model, and the aggregator (max: Campanella et al. 2019; mean). Writes "
                                    "OUT/prediction.json and OUT/heatmap.png.")
    q.add_argument("slide", help="a slide file (pyramidal TIFF, SVS, ...)")
    _pipeline_options(q)
    q.add_argument("--out", default="medfool-slide", help="output folder (default medfool-slide)")
    q.set_defaults(func=cmd_predict)


def _add_attack(wsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    a = wsub.add_parser("attack", help="fool a slide's diagnosis; write the change back and re-read the file",
                        description="One attack on SLIDE's diagnosis (a benign slide pushed to malignant, a "
                                    "malignant one to benign): 'pixels' is one- or k-pixel differential evolution "
                                    "(Su et al. 2019) in one tile at a time, tiles tried by the aggregator's own "
                                    "signal or at random, a query being one slide answer; 'patch' an adversarial "
                                    "patch on one tile and 'fraction' PGD on a share of the tiles, both white-box "
                                    "through the aggregator. A success is written into level 0 of a lossless copy "
                                    "and a JPEG copy (lower levels left stale) and judged by reading those files "
                                    "again. Writes OUT/result.json, OUT/attacked_lossless.tif, "
                                    "OUT/attacked_jpeg.tif, OUT/before.png and OUT/after.png.")
    a.add_argument("slide", help="a slide file (pyramidal TIFF, SVS, ...)")
    a.add_argument("--attack", default="pixels", choices=("pixels", "patch", "fraction"),
                   help="pixels (black-box, default), patch or fraction (white-box)")
    _pipeline_options(a)
    _attack_options(a)
    a.add_argument("--out", default="medfool-slide-attack", help="output folder (default medfool-slide-attack)")
    a.set_defaults(func=cmd_attack)


def _add_audit(wsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    u = wsub.add_parser("audit", help="the slide threats on a folder of slides, one HTML report",
                        description="Every slide of SLIDES (those its slides.json lists, with their labels, else "
                                    "every .tif/.tiff/.svs) read once; each attack of --attacks on the slides read "
                                    "correctly; every success written into a lossless and a JPEG copy and read back "
                                    "through the whole pipeline; pyramid consistency of clean and attacked files. "
                                    "Writes OUT/report.html (thumbnails and heat maps before and after, the changed "
                                    "pixels ringed), OUT/results.json, and OUT/slides/*.json as each slide finishes "
                                    "(a rerun resumes from them).")
    u.add_argument("slides", help="a folder of slides ('medfool wsi build' writes one)")
    _pipeline_options(u)
    u.add_argument("--attacks", default="pixels:1,pixels:10,patch:16,fraction:0.01",
                   help="comma-separated pixels:K (K-pixel DE, guided), patch:SIDE (px), fraction:SHARE (PGD "
                        "8/255 on that share of tiles) (default pixels:1,pixels:10,patch:16,fraction:0.01)")
    u.add_argument("--limit", type=int_in(1), default=None, help="audit only the first N slides")
    u.add_argument("--seed", type=int_in(0), default=0)
    u.add_argument("--out", default="medfool-slide-audit", help="output folder (default medfool-slide-audit)")
    u.set_defaults(func=cmd_audit)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("wsi", help="whole slides: build slides of real tissue, slide models, diagnosis, attacks, audit",
                       description="Whole-slide images (pyramidal TIFF, SVS; needs the wsi extra: pip install "
                                   "'medfool[wsi]'). See 'medfool wsi SUBCOMMAND --help'.")
    wsub = p.add_subparsers(dest="wsi_command", metavar="SUBCOMMAND")
    wsub.required = True
    for add in (_add_build, _add_train, _add_predict, _add_attack, _add_audit):
        add(wsub)
