"""Adversarial images of DICOM data as DICOM files: each judged as its file can store it, then
written back from its source file's metadata, with the budget in the data's native units."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfool import __version__
from medfool.attacks.base import AttackResult, Victim
from medfool.data.dicom import DICOM_SUFFIXES, StoredGrid, stored_grid, write_dicom
from medfool.data.windowing import Window
from medfool.errors import DataError
from medfool.models.classifier import Classifier
from medfool.runs.images import AttackJob, Images

__all__ = ["dicom_grids", "dicom_sources", "native_budgets", "on_stored_grid", "write_back_dicom"]

log = logging.getLogger("medfool")


def native_budgets(window: Window | None, eps_list: list[float | None]) -> dict[str, Any]:
    """Each budget in the data's native units (DICOM / NIfTI data), for results and reports."""
    if window is None:
        return {}
    return {"unit": window.unit, "window_centre": window.centre, "window_width": window.width,
            "eps_native": [None if e is None else window.native(e) for e in eps_list]}


def dicom_sources(job: AttackJob, images: Images) -> list[Path] | None:
    """The attacked images' DICOM files, when every attacked image came from one."""
    info = images.dataset.info
    files = images.dataset.split(job.split).files
    if info.window is None or files is None or int(images.x.shape[1]) != 1:
        return None
    sources = [Path(files[int(i)]) for i in images.index]
    if not all(f.suffix.lower() in DICOM_SUFFIXES and f.is_file() for f in sources):
        return None
    return sources


def dicom_grids(sources: list[Path] | None, images: Images, model: Victim) -> list[StoredGrid] | None:
    """The stored-value grid of each attacked image's DICOM file (``sources``), when its
    adversarial version can be judged as written back there (a white-box model, images at their
    files' own size)."""
    if sources is None or not isinstance(model, Classifier):
        return None
    grids = [stored_grid(f) for f in sources]
    if any(g.shape != tuple(images.x.shape[-2:]) for g in grids):
        log.warning("images were resized on loading: adversarial images are not written back as DICOM")
        return None
    return grids


def on_stored_grid(r: AttackResult, model: Classifier, x: torch.Tensor, y: torch.Tensor, grids: list[StoredGrid],
                   window: Window | None) -> AttackResult:
    """``r`` with every adversarial image snapped to what its DICOM file can store, success
    judged again on that: an attack that only just crossed the boundary can fall back when
    written to a file, and the results must describe the file, not the float image."""
    assert window is not None
    snapped = np.stack([g.snap(a[0].astype(np.float64), window)[None]
                        for g, a in zip(grids, r.x_adv.detach().cpu().numpy(), strict=True)])
    x_q = torch.from_numpy(snapped.astype(np.float32)).to(x.device)
    with torch.no_grad(), model.padded():
        clean, adv = model(x), model(x_q)
    target = r.target if isinstance(r.target, torch.Tensor) else None
    return AttackResult.from_scores(r.attack, r.config, model.task, x, x_q, y, clean, adv, gradients=r.gradients,
                                    queries=r.queries, wall_s=r.wall_s, target=target, extras=r.extras)


def write_back_dicom(job: AttackJob, window: Window, result: AttackResult, index: torch.Tensor,
                     sources: list[Path]) -> list[str]:
    """The adversarial images (last budget) as DICOM files beside the results, each from its
    source file's metadata (new SOP Instance UID, marked DERIVED, a note on how it was made)."""
    eps = job.budgets[-1]
    budget = "" if eps is None else f", eps {eps * 255:.3g}/255 = {window.native(eps):.4g} {window.unit}"
    note = (f"MODIFIED by medfool {__version__} ({job.name} attack{budget}, seed {job.seed}): an adversarial test "
            "image, not for diagnosis")
    written: list[str] = []
    for k, (i, src) in enumerate(zip(index, sources, strict=True)):
        target = job.out / "dicom" / f"{int(i):05d}_{src.stem}.dcm"
        try:
            write_dicom(src, result.x_adv[k].detach().cpu().numpy().transpose(1, 2, 0), target, window=window,
                        note=note)
        except DataError as exc:  # resized on loading, or not writable as DICOM: the npz has it
            log.warning("not written back as DICOM: %s", exc)
            return written
        written.append(str(target.relative_to(job.out)))
    return written
