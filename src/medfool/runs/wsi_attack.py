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
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medfool.errors import ConfigError
from medfool.report.slides import slide_heatmap
from medfool.runs.common import Say, check_writable, to_log
from medfool.runs.wsi import SlidePipeline, SlideReading, load_pipeline, read_slide, slide_tiles
from medfool.utils.io import atomic_write_json
from medfool.utils.repro import environment
from medfool.vocab import Device
from medfool.wsi.aggregate import Aggregator
from medfool.wsi.attacks import Order, SlideAttackResult, fraction_attack, patch_attack, pixel_search
from medfool.wsi.build import Compression
from medfool.wsi.forensics import SlideEdit, consistency_scores, write_back
from medfool.wsi.scorer import SlideScorer
from medfool.wsi.slide import open_slide
from medfool.wsi.tiles import TileGrid

__all__ = ["AttackSpec", "SlideAttackJob", "attack_tiles", "heat_label", "marks", "run_slide_attack", "shown",
           "source_quality", "write_and_check"]

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

    def validate(self, tile: int) -> None:
        """Fail before any work on settings no attack can run with (``tile``: the tile's side)."""
        bad = {"pixels": self.pixels < 1 or self.population < 4 or self.max_tiles < 1 or self.generations < 0,
               "patch": not 1 <= self.patch <= tile,
               "fraction": not 0 < self.fraction <= 1 or not 0 < self.eps <= 1}
        if self.kind not in bad:
            raise ConfigError(f"unknown slide attack {self.kind!r} (pixels, patch, fraction)")
        if bad[self.kind]:
            raise ConfigError(f"{self.kind}: pixels >= 1, a patch of 1 to {tile} px, a fraction in (0, 1] and eps "
                              f"in (0, 255]/255 (got {self.name})")

    @property
    def name(self) -> str:
        """How reports name the attack."""
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


def heat_label(aggregator: Aggregator) -> str:
    """What a heat map's colours mean for this aggregator (see :func:`shown`)."""
    return "tile malignancy" if aggregator != "attention" else "attention (share of the largest)"


def shown(scores: np.ndarray, aggregator: Aggregator) -> np.ndarray:
    """Tile scores on the heat map's 0-1 scale: malignancy as it is, attention as a share of
    the largest weight (the weights sum to one over thousands of tiles)."""
    top = max(float(scores.max()), 1e-12) if aggregator == "attention" and scores.size else 1.0
    out: np.ndarray = np.clip(scores / top, 0, 1)
    return out


def marks(edits: list[SlideEdit]) -> np.ndarray:
    """(M, 2) level-0 centres of the edits, for rings on the thumbnails."""
    return np.array([[e.x + e.pixels.shape[1] / 2, e.y + e.pixels.shape[0] / 2] for e in edits]).reshape(-1, 2)


def write_and_check(source: Path, out: Path, result: SlideAttackResult, pipe: SlidePipeline, *,
                    quality: int, keep: bool = True) -> tuple[dict[str, Any], SlideReading]:
    """Write the attack into a lossless and a JPEG copy (lower levels stale), read both back
    through the whole pipeline, and score every file's pyramid consistency: the checks, and
    the reading of the lossless copy."""
    checks: dict[str, Any] = {}
    with open_slide(source) as s:
        checks["source_consistency"] = consistency_scores(s)
    copies: tuple[tuple[str, Compression], ...] = (("lossless", "lossless"), ("jpeg", "jpeg"))
    lossless: SlideReading | None = None
    for name, compression in copies:
        path = out / f"attacked_{name}.tif"
        write_back(source, path, result.edits, compression=compression, quality=quality)
        reading = read_slide(path, pipe.model, pipe.aggregator, min_tissue=pipe.min_tissue, mil=pipe.mil)
        fooled = (reading.probability >= pipe.threshold) == result.to_malignant
        with open_slide(path) as s:
            consistency = consistency_scores(s)
        checks[name] = {"file": path.name, "probability": reading.probability, "fooled": bool(fooled),
                        "consistency": consistency, **({"quality": quality} if name == "jpeg" else {})}
        lossless = lossless or reading
        if not keep:
            path.unlink()
    assert lossless is not None
    return checks, lossless


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


OUTPUTS = ("result.json", "before.png", "after.png", "attacked_lossless.tif", "attacked_jpeg.tif")


def run_slide_attack(job: SlideAttackJob, say: Say = to_log) -> dict[str, Any]:
    """The attack on the slide, its copies written and re-read: OUT/result.json, OUT/attacked_*.tif,
    OUT/before.png and OUT/after.png (made in a scratch folder beside OUT and moved in at the end:
    a failed run leaves nothing of its own, and no file of an earlier run beside a new result)."""
    pipe = load_pipeline(job.model, job.aggregator, job.min_tissue, job.device, job.threshold)
    job.spec.validate(pipe.model.meta.input_shape[-1])
    check_writable(job.out)
    with open_slide(job.slide) as slide:
        view = slide_tiles(slide, pipe.model.meta.input_shape[-1], pipe.min_tissue)
    grid, tiles, thumb, ds = view.grid, view.tiles, view.thumbnail, view.thumbnail_downsample
    scorer = SlideScorer(pipe.aggregator, pipe.model, tiles, pipe.mil)
    before = scorer.probability()
    say(f"{job.slide.name}: reads {'malignant' if before >= pipe.threshold else 'benign'} (p = {before:.3f} at "
        f"threshold {pipe.threshold:.3f}, {pipe.aggregator} over {len(grid):,} tiles); running {job.spec.name}")
    result = attack_tiles(scorer, tiles, grid, job.spec, pipe.threshold)
    record: dict[str, Any] = {"slide": str(job.slide), "model": job.model, "aggregator": pipe.aggregator,
                              "threshold": pipe.threshold, "tiles": len(grid), "spec": asdict(job.spec),
                              **result.summary()}
    label = heat_label(pipe.aggregator)
    rings = marks(result.edits) if result.success else None
    job.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=job.out.parent, prefix=f".{job.out.name}.") as tmp:
        work = Path(tmp)
        slide_heatmap(work / "before.png", thumb, ds, grid.origins, grid.tile,
                      shown(scorer.scores.cpu().numpy(), pipe.aggregator),
                      title=f"{job.slide.name}: before (p = {before:.3f})", label=label, marks=rings)
        if result.success:
            quality = job.quality or source_quality(job.slide)
            checks, reading = write_and_check(job.slide, work, result, pipe, quality=quality)
            record["written"] = checks
            slide_heatmap(work / "after.png", thumb, ds, reading.grid.origins, reading.grid.tile,
                          shown(reading.tile_scores, pipe.aggregator),
                          title=f"{job.slide.name}: attacked file (p = {reading.probability:.3f})", label=label,
                          marks=rings)
            _say_written(say, result, checks, quality)
        elif result.impossible:
            say(f"  not attacked: {result.impossible}")
        else:
            say(f"  not fooled after {result.queries:,} queries / {result.gradients} gradients over "
                f"{result.tiles_tried} tile(s) (p = {result.probability_after:.3f})")
        record["environment"] = environment()
        atomic_write_json(work / "result.json", record)
        job.out.mkdir(exist_ok=True)
        for name in OUTPUTS:
            (job.out / name).unlink(missing_ok=True)
        for name in OUTPUTS[::-1]:  # result.json last
            if (work / name).is_file():
                (work / name).replace(job.out / name)
    return record


def _say_written(say: Say, result: SlideAttackResult, checks: dict[str, Any], quality: int) -> None:
    lossless, jpeg = checks["lossless"], checks["jpeg"]
    say(f"  fooled with {result.pixels_changed} pixel(s) in {len(result.tiles_changed)} tile(s) after "
        f"{result.queries:,} queries / {result.gradients} gradients; from the written files: lossless "
        f"{'fooled' if lossless['fooled'] else 'NOT fooled'} (p = {lossless['probability']:.3f}), "
        f"JPEG q{quality} {'fooled' if jpeg['fooled'] else 'not fooled'} (p = {jpeg['probability']:.3f})")
