"""Whole-slide jobs: ``medfool wsi build`` (mosaic slides of real tissue) and ``medfool wsi
predict`` (a slide's diagnosis and its heat map)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.models.classifier import Classifier
from medfool.models.features import deep_features
from medfool.report.slides import slide_heatmap
from medfool.runs.common import DataSource, Say, check_writable, to_log
from medfool.utils.device import resolve_device
from medfool.utils.io import atomic_write_json
from medfool.utils.repro import environment
from medfool.vocab import Device
from medfool.wsi.aggregate import (
    Aggregator,
    AttentionMIL,
    aggregate,
    calibrate_threshold,
    malignancy,
    train_attention,
)
from medfool.wsi.build import Compression, MosaicSpec, build_slides
from medfool.wsi.slide import Slide, open_slide
from medfool.wsi.slidemodel import (
    SlideModelSpec,
    is_slide_model,
    load_slide_model,
    save_slide_model,
    tile_model_path,
)
from medfool.wsi.tiles import TileGrid, read_tiles, tile_grid

__all__ = ["BuildJob", "PredictJob", "SlidePipeline", "SlideReading", "SlideTiles", "TrainJob", "load_pipeline",
           "read_slide", "run_build", "run_predict", "run_train", "slide_files", "slide_tiles", "tissue_tiles"]


@dataclass(frozen=True)
class BuildJob:
    data: DataSource
    out: Path
    split: str = "test"
    n_benign: int = 10
    n_malignant: int = 10
    side: int = 4096
    compression: Compression = "jpeg"
    quality: int = 90
    seed: int = 0


def run_build(job: BuildJob, say: Say = to_log) -> None:
    """Mosaic slides of ``job.split``'s tiles: benign tissue, and malignant slides with a region
    of one cancer class."""
    dataset = job.data.load()
    info = dataset.info
    if not info.critical_classes:
        raise ConfigError(f"{info.name}: names no malignant (critical) classes to build malignant slides from")
    benign = [c for c in range(info.num_classes) if c not in info.critical_classes]
    if len(benign) != 1:
        raise ConfigError(f"{info.name}: expected one benign class, got {len(benign)}")
    split = dataset.split(job.split)  # type: ignore[arg-type]
    tile = split.image_shape[-1]
    check_writable(job.out)
    say(f"building {job.n_benign} benign and {job.n_malignant} malignant slides of {job.side} px from "
        f"{info.name} [{job.split}] tiles of {tile} px ({job.compression}"
        f"{f' at quality {job.quality}' if job.compression == 'jpeg' else ''})")
    records = build_slides(split, job.split, info.class_names, benign[0], tuple(info.critical_classes), job.out,
                           n_benign=job.n_benign, n_malignant=job.n_malignant,
                           spec=MosaicSpec(side=job.side, tile=tile), compression=job.compression,
                           quality=job.quality, seed=job.seed)
    say(f"wrote {len(records)} slides and slides.json to {job.out}")


@dataclass(frozen=True)
class SlideReading:
    """What the pipeline read from one slide file."""

    probability: float
    tile_scores: np.ndarray
    grid: TileGrid
    thumbnail: np.ndarray
    thumbnail_downsample: float


def tissue_tiles(slide: Slide, tile: int, min_tissue: float) -> tuple[TileGrid, torch.Tensor]:
    """The slide's tissue tiles at level 0 and their pixels: what every slide model reads."""
    grid = tile_grid(slide, level=0, tile=tile, min_tissue=min_tissue)
    if len(grid) == 0:
        raise ConfigError(f"{slide.path}: no tissue found (no tile with at least {min_tissue:.0%} tissue)")
    return grid, read_tiles(slide, grid)


@dataclass(frozen=True)
class SlideTiles:
    """A slide as the attacks and the heat maps take it: its tissue tiles and a thumbnail."""

    grid: TileGrid
    tiles: torch.Tensor
    thumbnail: np.ndarray
    thumbnail_downsample: float


def slide_tiles(slide: Slide, tile: int, min_tissue: float) -> SlideTiles:
    """The open slide's tissue tiles (:func:`tissue_tiles`) and a thumbnail of at most 1,024 px."""
    grid, tiles = tissue_tiles(slide, tile, min_tissue)
    level = slide.thumbnail_level(1024)
    return SlideTiles(grid, tiles, slide.level_image(level), slide.downsamples[level])


def read_slide(path: Path, model: Classifier, aggregator: Aggregator, *, tile: int | None = None,
               min_tissue: float = 0.5, mil: AttentionMIL | None = None) -> SlideReading:
    """The whole pipeline on the file: open, find tissue, tile at level 0 (tiles of the model's
    input size), score, aggregate."""
    with open_slide(path) as slide:
        view = slide_tiles(slide, tile or model.meta.input_shape[-1], min_tissue)
    with torch.no_grad():
        out = aggregate(aggregator, model, view.tiles, mil)
    return SlideReading(float(out.probability), out.tile_scores.cpu().numpy(), view.grid, view.thumbnail,
                        view.thumbnail_downsample)


@dataclass(frozen=True)
class SlidePipeline:
    """What reads a slide: the tile model, the aggregator (with its attention head) and the
    share of tissue a tile needs."""

    model: Classifier
    aggregator: Aggregator
    mil: AttentionMIL | None
    min_tissue: float
    threshold: float
    files: tuple[Path, ...] = ()  # the model's files on disk (slide model and tile model)


def load_pipeline(model: str, aggregator: Aggregator, min_tissue: float, device: Device,
                  threshold: float | None = None) -> SlidePipeline:
    """A tile model with the aggregator asked for (threshold 0.5 unless given), or a slide
    model folder ('medfool wsi train' wrote it), whose own aggregator, tissue share and
    threshold win (a threshold given here still overrides its threshold)."""
    mil, tile_path, chosen, files = None, model, 0.5, []
    if is_slide_model(model):
        spec, mil = load_slide_model(model)
        aggregator, min_tissue, tile_path = spec.aggregator, spec.min_tissue, tile_model_path(spec, Path(model))
        chosen = spec.threshold
        files = [Path(model) / "slide_model.json", Path(model) / "attention.safetensors"]
    tile_model, _ = load_classifier(tile_path, device=resolve_device(device))
    files.append(Path(tile_path))
    return SlidePipeline(tile_model, aggregator, mil, min_tissue, chosen if threshold is None else threshold,
                         tuple(f for f in files if f.is_file()))


@dataclass(frozen=True)
class PredictJob:
    slide: Path
    model: str
    out: Path
    aggregator: Aggregator = "max"
    threshold: float | None = None
    min_tissue: float = 0.5
    device: Device = "auto"


def run_predict(job: PredictJob, say: Say = to_log) -> dict[str, Any]:
    """The slide's diagnosis (OUT/prediction.json) and heat map (OUT/heatmap.png)."""
    pipe = load_pipeline(job.model, job.aggregator, job.min_tissue, job.device, job.threshold)
    check_writable(job.out)
    job = replace(job, aggregator=pipe.aggregator, min_tissue=pipe.min_tissue, threshold=pipe.threshold)
    reading = read_slide(job.slide, pipe.model, pipe.aggregator, min_tissue=pipe.min_tissue, mil=pipe.mil)
    label = "malignant" if reading.probability >= pipe.threshold else "benign"
    job.out.mkdir(parents=True, exist_ok=True)
    slide_heatmap(job.out / "heatmap.png", reading.thumbnail, reading.thumbnail_downsample, reading.grid.origins,
                  reading.grid.tile, np.clip(reading.tile_scores, 0, 1),
                  title=f"{job.slide.name}: {label} (p = {reading.probability:.3f}, {job.aggregator})",
                  label="tile malignancy" if job.aggregator != "attention" else "attention")
    result = {"slide": str(job.slide), "model": job.model, "aggregator": job.aggregator, "label": label,
              "probability_malignant": reading.probability, "threshold": job.threshold,
              "tiles": len(reading.grid), "tile_px": reading.grid.tile, "min_tissue": job.min_tissue,
              "top_tiles": [{"x": int(x), "y": int(y), "score": float(s)} for (x, y), s in
                            sorted(zip(reading.grid.origins.tolist(), reading.tile_scores.tolist(), strict=True),
                                   key=lambda t: -t[1])[:10]],
              "environment": environment()}
    atomic_write_json(job.out / "prediction.json", result)
    say(f"{job.slide.name}: {label} (probability of malignancy {reading.probability:.3f}, {job.aggregator} over "
        f"{len(reading.grid)} tissue tiles); wrote {job.out}/prediction.json and heatmap.png")
    return result


@dataclass(frozen=True)
class TrainJob:
    slides: Path
    model: str
    out: Path
    aggregator: Aggregator = "attention"
    val: Path | None = None
    epochs: int = 40
    min_tissue: float = 0.5
    seed: int = 0
    device: Device = "auto"


def slide_files(folder: Path) -> list[tuple[Path, str | None]]:
    """The slides of ``folder`` with their labels: those slides.json lists (paths confined to
    the folder), else every .tif/.tiff/.svs in it, unlabelled."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder of slides")
    manifest = folder / "slides.json"
    if not manifest.is_file():
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".svs"))
        return [(p, None) for p in found]
    try:
        records = json.loads(manifest.read_text())["slides"]
        pairs: list[tuple[Path, str | None]] = [((folder / str(r["file"])).resolve(), str(r["label"])) for r in records]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{manifest}: not a slide list ('medfool wsi build' writes one)") from None
    for path, label in pairs:
        if folder.resolve() not in path.parents:
            raise ConfigError(f"{manifest}: {path.name!r} lies outside the folder")
        if label not in ("benign", "malignant"):
            raise ConfigError(f"{manifest}: {path.name!r} has label {label!r}; expected benign or malignant")
    return pairs


def _bags(folder: Path, model: Classifier, min_tissue: float, features: bool,
          say: Say) -> tuple[list[torch.Tensor], list[int]]:
    """Each slide of ``folder`` (its slides.json) as a bag of tile features (or tile
    malignancy), with its label."""
    from tqdm import tqdm

    if not (folder / "slides.json").is_file():
        raise ConfigError(f"{folder / 'slides.json'}: no slide list ('medfool wsi build' writes it)")
    pairs = slide_files(folder)  # paths confined to the folder, labels benign or malignant
    if not pairs:
        raise ConfigError(f"{folder / 'slides.json'}: no 'slides' listed")
    bags, labels = [], []
    for path, label in tqdm(pairs, desc=f"tiles of {folder.name}", unit="slide", leave=False):
        with open_slide(path) as slide:
            _, tiles = tissue_tiles(slide, model.meta.input_shape[-1], min_tissue)
        with torch.no_grad():
            bags.append(deep_features(model, tiles) if features else malignancy(model, tiles))
        labels.append(int(label == "malignant"))
    say(f"  {folder}: {len(bags)} slides, {sum(labels)} malignant, {sum(b.shape[0] for b in bags):,} tiles")
    return bags, labels


def _slide_probabilities(aggregator: Aggregator, bags: list[torch.Tensor], mil: AttentionMIL | None) -> list[float]:
    with torch.no_grad():
        if mil is not None:
            return [float(torch.sigmoid(mil(b)[0])) for b in bags]
        return [float(b.max() if aggregator == "max" else b.mean()) for b in bags]


def _accuracy(probabilities: list[float], labels: list[int], threshold: float) -> dict[str, float]:
    per = {c: [(p >= threshold) == bool(c) for p, y in zip(probabilities, labels, strict=True) if y == c]
           for c in (0, 1)}
    right = per[0] + per[1]
    return {"accuracy": sum(right) / len(right),
            "benign_accuracy": sum(per[0]) / max(len(per[0]), 1),
            "malignant_accuracy": sum(per[1]) / max(len(per[1]), 1)}


def run_train(job: TrainJob, say: Say = to_log) -> dict[str, Any]:
    """A slide model on slides with slide labels only, the tile model frozen: attention MIL
    (Ilse et al. 2018) learnt, or max / mean pooling whose operating threshold is chosen on the
    training slides. OUT/slide_model.json (+ attention.safetensors) and OUT/metrics.json."""
    model, _ = load_classifier(job.model, device=resolve_device(job.device))
    check_writable(job.out)
    attention = job.aggregator == "attention"
    bags, labels = _bags(job.slides, model, job.min_tissue, attention, say)
    if len(set(labels)) < 2:
        raise ConfigError(f"{job.slides}: training needs benign and malignant slides")
    mil = train_attention(bags, labels, epochs=job.epochs, seed=job.seed) if attention else None
    probs = _slide_probabilities(job.aggregator, bags, mil)
    threshold = 0.5 if attention else calibrate_threshold(probs, labels)
    metrics: dict[str, Any] = {"aggregator": job.aggregator, "threshold": threshold, "train_slides": len(bags),
                               **{f"train_{k}": v for k, v in _accuracy(probs, labels, threshold).items()},
                               "epochs": job.epochs if attention else 0, "seed": job.seed,
                               "tile_model": str(Path(job.model).resolve())}
    if job.val is not None:
        vb, vl = _bags(job.val, model, job.min_tissue, attention, say)
        metrics["val_slides"] = len(vb)
        metrics.update({f"val_{k}": v for k, v in _accuracy(_slide_probabilities(job.aggregator, vb, mil), vl,
                                                              threshold).items()})
    save_slide_model(job.out, SlideModelSpec(str(Path(job.model).resolve()), job.aggregator, job.min_tissue,
                                             dim=bags[0].shape[1] if attention else 0, threshold=threshold), mil)
    atomic_write_json(job.out / "metrics.json", {**metrics, "environment": environment()})
    say(f"{job.aggregator} slide model: threshold {threshold:.3f}, train accuracy {metrics['train_accuracy']:.3f}"
        + (f", val accuracy {metrics['val_accuracy']:.3f} on {metrics['val_slides']} slides" if job.val else "")
        + f"; wrote {job.out}/slide_model.json")
    return metrics
