"""``medfool wsi attack``: one attack on one slide's diagnosis, written back into a copy of the
file and judged by reading that file through the whole pipeline again.

The attack runs on the tiles as read (:mod:`medfool.wsi.attacks`); its change is written into
level 0 of a lossless copy with the lower levels left as they were (what editing the
full-resolution image leaves behind), and into a JPEG copy at the source's quality (re-encoding
every tile: does the change survive storage?). Each copy is read again from disk (tissue mask,
tiles, model, aggregator) and the pyramid-consistency score of source and copies is recorded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medfool.errors import ConfigError
from medfool.report.slides import slide_heatmap
from medfool.runs.common import Say, check_writable, to_log
from medfool.runs.wsi import SlidePipeline, load_pipeline, read_slide, tissue_tiles
from medfool.utils.io import atomic_write_json
from medfool.utils.repro import environment
from medfool.vocab import Device
from medfool.wsi.aggregate import Aggregator
from medfool.wsi.attacks import Order, SlideAttackResult, fraction_attack, patch_attack, pixel_search
from medfool.wsi.forensics import SlideEdit, consistency_scores, write_back
from medfool.wsi.scorer import SlideScorer
from medfool.wsi.slide import open_slide
from medfool.wsi.tiles import TileGrid

__all__ = ["AttackSpec", "SlideAttackJob", "attack_tiles", "marks", "run_slide_attack", "shown", "source_quality",
           "write_and_check"]

AttackKind = Literal["pixels", "patch", "fraction"]


@dataclass(frozen=True)
class AttackSpec:
    """Which attack, and its settings."""

    kind: AttackKind = "pixels"
    pixels: int = 1
    order: Order = "guided"
    population: int = 100
    generations: int = 10
    max_tiles: int = 20
    patch: int = 16
    fraction: float = 0.01
    eps: float = 8 / 255
    seed: int = 0

    @property
    def name(self) -> str:
        if self.kind == "pixels":
            return f"{self.pixels}-pixel DE ({self.order})"
        if self.kind == "patch":
            return f"patch {self.patch} px"
        return f"PGD {round(self.eps * 255)}/255 on {self.fraction:.1%} of tiles"


def attack_tiles(scorer: SlideScorer, tiles: torch.Tensor, grid: TileGrid, spec: AttackSpec,
                 threshold: float) -> SlideAttackResult:
    """Run ``spec`` on a slide's tiles (the scorer holds the slide's cached answer)."""
    if spec.kind == "pixels":
        return pixel_search(scorer, tiles, grid.origins, pixels=spec.pixels, order=spec.order, threshold=threshold,
                            population=spec.population, generations=spec.generations, max_tiles=spec.max_tiles,
                            seed=spec.seed)
    if spec.kind == "patch":
        return patch_attack(scorer, tiles, grid.origins, size=spec.patch, threshold=threshold, seed=spec.seed)
    if spec.kind == "fraction":
        return fraction_attack(scorer, tiles, grid.origins, fraction=spec.fraction, eps=spec.eps,
                               threshold=threshold)
    raise ConfigError(f"unknown slide attack {spec.kind!r} (pixels, patch, fraction)")


def source_quality(slide: Path, default: int = 90) -> int:
    """The JPEG quality the slide was written at, where the slides.json beside it says."""
    manifest = slide.parent / "slides.json"
    try:
        q = json.loads(manifest.read_text()).get("quality")
    except (OSError, ValueError, AttributeError):
        return default
    return int(q) if isinstance(q, int) and 1 <= q <= 100 else default


def shown(scores: np.ndarray, aggregator: Aggregator) -> np.ndarray:
    """Tile scores on the heat map's 0-1 scale: malignancy as it is, attention as a share of
    the largest weight (the weights sum to one over thousands of tiles)."""
    top = max(float(scores.max()), 1e-12) if aggregator == "attention" and scores.size else 1.0
    out: np.ndarray = np.clip(scores / top, 0, 1)
    return out


def marks(edits: list[SlideEdit]) -> np.ndarray:
    """(M, 2) level-0 centres of the edits, for rings on the thumbnails."""
    return np.array([[e.x + e.pixels.shape[1] / 2, e.y + e.pixels.shape[0] / 2] for e in edits]).reshape(-1, 2)


def write_and_check(source: Path, out: Path, result: SlideAttackResult, pipe: SlidePipeline, *, threshold: float,
                    quality: int, keep: bool = True) -> dict[str, Any]:
    """Write the attack into a lossless and a JPEG copy (lower levels stale), read both back
    through the whole pipeline, and score every file's pyramid consistency."""
    checks: dict[str, Any] = {}
    with open_slide(source) as s:
        checks["source_consistency"] = consistency_scores(s)
    for name, compression in (("lossless", "lossless"), ("jpeg", "jpeg")):
        path = out / f"attacked_{name}.tif"
        write_back(source, path, result.edits, compression=compression, quality=quality)  # type: ignore[arg-type]
        reading = read_slide(path, pipe.model, pipe.aggregator, min_tissue=pipe.min_tissue, mil=pipe.mil)
        fooled = (reading.probability >= threshold) == result.to_malignant
        with open_slide(path) as s:
            consistency = consistency_scores(s)
        checks[name] = {"file": path.name, "probability": reading.probability, "fooled": bool(fooled),
                        "consistency": consistency, **({"quality": quality} if name == "jpeg" else {})}
        if name == "lossless":
            checks["reading"] = reading
        if not keep:
            path.unlink()
    return checks


@dataclass(frozen=True)
class SlideAttackJob:
    slide: Path
    model: str
    out: Path
    spec: AttackSpec = AttackSpec()
    aggregator: Aggregator = "max"
    threshold: float | None = None  # None: the slide model's own (0.5 for a bare tile model)
    min_tissue: float = 0.5
    quality: int | None = None
    device: Device = "auto"


def run_slide_attack(job: SlideAttackJob, say: Say = to_log) -> dict[str, Any]:
    """The attack on the slide, its copies written and re-read: OUT/result.json, OUT/attacked_*.tif,
    OUT/before.png and OUT/after.png."""
    pipe = load_pipeline(job.model, job.aggregator, job.min_tissue, job.device, job.threshold)
    threshold = pipe.threshold
    check_writable(job.out)
    with open_slide(job.slide) as slide:
        grid, tiles = tissue_tiles(slide, pipe.model.meta.input_shape[-1], pipe.min_tissue)
        level = slide.thumbnail_level(1024)
        thumb, ds = slide.level_image(level), slide.downsamples[level]
    scorer = SlideScorer(pipe.aggregator, pipe.model, tiles, pipe.mil)
    before = scorer.probability()
    say(f"{job.slide.name}: reads {'malignant' if before >= threshold else 'benign'} (p = {before:.3f}, "
        f"{pipe.aggregator} over {len(grid):,} tiles); running {job.spec.name}")
    result = attack_tiles(scorer, tiles, grid, job.spec, threshold)
    job.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"slide": str(job.slide), "model": job.model, "aggregator": pipe.aggregator,
                              "threshold": threshold, "tiles": len(grid), "spec": asdict(job.spec),
                              **result.summary()}
    label = "tile malignancy" if pipe.aggregator != "attention" else "attention (share of the largest)"
    slide_heatmap(job.out / "before.png", thumb, ds, grid.origins, grid.tile,
                  shown(scorer.scores.cpu().numpy(), pipe.aggregator),
                  title=f"{job.slide.name}: before (p = {before:.3f})", label=label, marks=marks(result.edits))
    if result.success:
        quality = job.quality or source_quality(job.slide)
        checks = write_and_check(job.slide, job.out, result, pipe, threshold=threshold, quality=quality)
        reading = checks.pop("reading")
        record["written"] = checks
        slide_heatmap(job.out / "after.png", thumb, ds, reading.grid.origins, reading.grid.tile,
                      shown(reading.tile_scores, pipe.aggregator),
                      title=f"{job.slide.name}: attacked file (p = {reading.probability:.3f})", label=label,
                      marks=marks(result.edits))
        lossless, jpeg = checks["lossless"], checks["jpeg"]
        say(f"  fooled with {result.pixels_changed} pixel(s) in {len(result.tiles_changed)} tile(s) after "
            f"{result.queries:,} queries / {result.gradients} gradients; from the written files: lossless "
            f"{'fooled' if lossless['fooled'] else 'NOT fooled'} (p = {lossless['probability']:.3f}), "
            f"JPEG q{quality} {'fooled' if jpeg['fooled'] else 'not fooled'} (p = {jpeg['probability']:.3f})")
    elif result.impossible:
        say(f"  not attacked: {result.impossible}")
    else:
        say(f"  not fooled after {result.queries:,} queries / {result.gradients} gradients over "
            f"{result.tiles_tried} tile(s) (p = {result.probability_after:.3f})")
    record["environment"] = environment()
    atomic_write_json(job.out / "result.json", record)
    return record
