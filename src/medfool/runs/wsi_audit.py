"""``medfool wsi audit``: the slide threats on a set of slides, one HTML report.

Every slide is read once (tissue, tiles, model, aggregator); each attack of the audit runs on
it, and every success is written into a lossless and a JPEG copy (lower levels stale) that are
read back through the whole pipeline. The copies are scored for pyramid consistency beside the
clean files, which gives the forensic check's ROC. One JSON per slide is written as it finishes
(OUT/slides/NAME.json), so an interrupted audit resumes where it stopped; the report
(OUT/report.html, OUT/results.json) is rendered from those files.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medfool.errors import ConfigError, MedfoolError
from medfool.report.slides import slide_heatmap
from medfool.report.slides_html import render_slide_audit
from medfool.runs.common import Say, check_writable, to_log
from medfool.runs.wsi import SlidePipeline, load_pipeline, slide_files, slide_tiles
from medfool.runs.wsi_attack import (
    AttackSpec,
    attack_tiles,
    heat_label,
    marks,
    shown,
    source_quality,
    write_and_check,
)
from medfool.utils.io import atomic_write_json
from medfool.utils.repro import environment
from medfool.vocab import Device
from medfool.wsi.aggregate import Aggregator
from medfool.wsi.forensics import consistency_scores
from medfool.wsi.scorer import SlideScorer
from medfool.wsi.slide import open_slide

__all__ = ["DEFAULT_ATTACKS", "SlideAuditJob", "parse_attacks", "run_slide_audit", "slide_files"]

DEFAULT_ATTACKS = "pixels:1,pixels:10,patch:16,fraction:0.01"


def parse_attacks(text: str, seed: int = 0) -> list[AttackSpec]:
    """'pixels:1,pixels:10,patch:16,fraction:0.01' -> the attacks (k pixels, patch side in px,
    share of tiles)."""
    specs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, value = part.partition(":")
        try:
            if kind == "pixels":
                specs.append(AttackSpec("pixels", pixels=int(value or 1), seed=seed))
            elif kind == "patch":
                specs.append(AttackSpec("patch", patch=int(value or 16), seed=seed))
            elif kind == "fraction":
                specs.append(AttackSpec("fraction", fraction=float(value or 0.01), seed=seed))
            else:
                raise ValueError
            ok = {"pixels": specs[-1].pixels >= 1, "patch": specs[-1].patch >= 1,
                  "fraction": 0 < specs[-1].fraction <= 1}[kind]
            if not ok:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--attacks: {part!r} is not pixels:K (K >= 1), patch:SIDE (px >= 1) or "
                              "fraction:SHARE (in (0, 1])") from None
    if not specs:
        raise ConfigError("--attacks: name at least one attack")
    return specs


def _record_name(folder: Path, path: Path) -> str:
    """A file name for a slide's record and figures, unique within the folder (the relative path
    with separators and dots replaced)."""
    rel = path.resolve().relative_to(folder.resolve()).as_posix()
    return re.sub(r"[^A-Za-z0-9_-]", "_", rel)


def _fingerprint(path: Path) -> dict[str, object]:
    """What a stored record must match to stand for the file now: its name, size and time."""
    st = path.stat()
    return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stored(done: Path, key: dict[str, object]) -> dict[str, Any] | None:
    """The record stored for this slide under the same settings and files, else None (an
    unreadable record counts as none)."""
    try:
        stored = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("record"), dict):
        return None
    record: dict[str, Any] = stored["record"]
    return record


@dataclass(frozen=True)
class SlideAuditJob:
    slides: Path
    model: str
    out: Path
    attacks: str = DEFAULT_ATTACKS
    aggregator: Aggregator = "max"
    threshold: float | None = None  # None: the slide model's own (0.5 for a bare tile model)
    min_tissue: float = 0.5
    limit: int | None = None
    seed: int = 0
    device: Device = "auto"


def _audit_slide(path: Path, label: str | None, pipe: SlidePipeline, specs: list[AttackSpec], figures: Path,
                 name: str) -> dict[str, Any]:
    """Every attack on one slide, successes written back and re-read; figures into ``figures``."""
    with open_slide(path) as slide:
        view = slide_tiles(slide, pipe.model.meta.input_shape[-1], pipe.min_tissue)
        consistency = consistency_scores(slide)
    grid, tiles, thumb, ds = view.grid, view.tiles, view.thumbnail, view.thumbnail_downsample
    scorer = SlideScorer(pipe.aggregator, pipe.model, tiles, pipe.mil)
    before = scorer.probability()
    rec: dict[str, Any] = {"slide": path.name, "label": label, "probability": before, "tiles": len(grid),
                           "read_as": "malignant" if before >= pipe.threshold else "benign",
                           "consistency": consistency, "attacks": []}
    quality = source_quality(path)
    label_txt = heat_label(pipe.aggregator)
    rec["figure"] = f"{name}.before.png"
    slide_heatmap(figures / rec["figure"], thumb, ds, grid.origins, grid.tile,
                  shown(scorer.scores.cpu().numpy(), pipe.aggregator), label=label_txt,
                  title=f"{path.name}: {rec['read_as']} (p = {before:.3f})")
    if label is not None and label != rec["read_as"]:
        rec["skipped"] = f"not attacked: read {rec['read_as']}, labelled {label}"
        return rec
    for i, spec in enumerate(specs):
        result = attack_tiles(scorer, tiles, grid, spec, pipe.threshold)
        entry: dict[str, Any] = {"spec": asdict(spec), "name": spec.name, **result.summary()}
        if result.success:
            with tempfile.TemporaryDirectory(dir=figures) as tmp:
                checks, reading = write_and_check(path, Path(tmp), result, pipe, quality=quality, keep=False)
            entry["written"] = checks
            entry["figure"] = f"{name}.{i}.after.png"
            slide_heatmap(figures / entry["figure"], thumb, ds, reading.grid.origins, reading.grid.tile,
                          shown(reading.tile_scores, pipe.aggregator), label=label_txt, marks=marks(result.edits),
                          title=f"{path.name} after {spec.name}: p = {reading.probability:.3f} from the file")
        rec["attacks"].append(entry)
    return rec


def _say_slide(say: Say, rec: dict[str, Any], n_attacks: int) -> None:
    if "probability" not in rec:
        say(f"{rec['slide']}: skipped ({rec['skipped']})")
        return
    fooled = sum(a["success"] for a in rec["attacks"])
    say(f"{rec['slide']}: read {rec['read_as']} (p = {rec['probability']:.3f}); fooled by {fooled} of "
        f"{n_attacks} attacks")


def run_slide_audit(job: SlideAuditJob, say: Say = to_log) -> dict[str, Any]:
    """Audit every slide of ``job.slides``; OUT/report.html and OUT/results.json."""
    from tqdm import tqdm

    specs = parse_attacks(job.attacks, job.seed)
    pairs = slide_files(job.slides)[: job.limit]
    if not pairs:
        raise ConfigError(f"{job.slides}: no slides (.tif, .tiff, .svs) found")
    pipe = load_pipeline(job.model, job.aggregator, job.min_tissue, job.device, job.threshold)
    for spec in specs:
        spec.validate(pipe.model.meta.input_shape[-1])
    check_writable(job.out)
    done_dir, figures = job.out / "slides", job.out / "figures"
    done_dir.mkdir(parents=True, exist_ok=True)
    figures.mkdir(exist_ok=True)
    config = {"slides": str(job.slides), "model": job.model, "aggregator": pipe.aggregator, "attacks": job.attacks,
              "threshold": pipe.threshold, "min_tissue": pipe.min_tissue, "seed": job.seed}
    model_key = [_fingerprint(p) for p in pipe.files]
    records = []
    for path, label in tqdm(pairs, desc="slides", unit="slide"):
        name = _record_name(job.slides, path)
        done = done_dir / f"{name}.json"
        key = {"config": config, "slide": _fingerprint(path), "label": label, "model": model_key}
        rec = _stored(done, key)
        if rec is None:
            try:
                rec = _audit_slide(path, label, pipe, specs, figures, name)
            except MedfoolError as exc:  # one damaged slide, or one without tissue, is reported, not fatal
                rec = {"slide": path.name, "label": label, "skipped": str(exc), "attacks": []}
            atomic_write_json(done, {"key": key, "record": rec})
            _say_slide(say, rec, len(specs))
        records.append(rec)
    results = {"config": config, "slides": records, "environment": environment()}
    render_slide_audit(job.out, results)
    say(f"wrote {job.out}/report.html and results.json")
    return results
