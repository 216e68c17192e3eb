"""NIfTI images (nibabel, an optional extra: ``pip install 'medfool[nifti]'``) as 2-D images.

A 2-D file is one image; a 3-D volume gives one image per slice along a stated axis (default
2, the axial slices of a volume in RAS order). Values pass through the file's scaling
(``scl_slope``/``scl_inter``), so they are in the file's native units (HU for most CT
volumes); the dataset's window then maps them to [0, 1] (:mod:`medfool.data.windowing`).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

import numpy as np

from medfool.data.windowing import NativeImage
from medfool.errors import DataError

__all__ = ["NIFTI_SUFFIXES", "is_nifti", "read_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: Path, axis: int = 2) -> list[NativeImage]:
    """The 2-D images in ``path``: itself, or the slices of a volume along ``axis``."""
    try:
        nib = import_module("nibabel")
    except ImportError:
        raise DataError("reading NIfTI needs nibabel, which is not installed: pip install 'medfool[nifti]'") from None
    try:
        volume = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except (OSError, ValueError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable NIfTI file ({first})") from None
    bad = int((~np.isfinite(volume)).sum())
    if bad:
        raise DataError(f"{path}: {bad} voxel value(s) are NaN or infinite")
    volume = np.squeeze(volume)
    if volume.ndim == 2:
        slices = [volume]
    elif volume.ndim == 3:
        if not 0 <= axis < 3:
            raise DataError(f"{path}: slice axis must be 0, 1 or 2, got {axis}")
        slices = [np.take(volume, k, axis=axis) for k in range(volume.shape[axis])]
    else:
        raise DataError(f"{path}: expected a 2-D image or a 3-D volume, got shape {volume.shape}")
    return [NativeImage(s.astype(np.float64), "native units", False, None) for s in slices]
