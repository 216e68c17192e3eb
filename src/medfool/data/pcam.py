"""PatchCamelyon (Veeling et al. 2018) from its official HDF5 files, read lazily with h5py.

The official release is six files ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``
(x: N x 96 x 96 x 3 uint8, y: N x 1 x 1 x 1). A single ``.h5`` with datasets ``x`` and ``y``
also works (it is split with the documented stratified split). 262,144 training tiles are
never loaded at once: pixels are read (and checked) batch by batch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from medfool.data.dataset import Dataset, DatasetInfo, Split, normalise_labels
from medfool.data.split import DEFAULT_FRACTIONS, stratified_split
from medfool.errors import DataError
from medfool.vocab import BINARY, SplitName

__all__ = ["PCAM_CITATION", "PCAM_CLASSES", "load_pcam"]

PCAM_CLASSES = ("normal", "metastatic tumour")
PCAM_CITATION = ("Veeling BS, Linmans J, Winkens J, Cohen T, Welling M. Rotation Equivariant CNNs for "
                 "Digital Pathology. MICCAI 2018.")
_PCAM_SPLITS: dict[str, SplitName] = {"train": "train", "valid": "val", "test": "test"}


def _open(path: Path, key: str) -> h5py.Dataset:
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable HDF5 file, truncated or corrupt ({exc})") from None
    if key not in handle:
        raise DataError(f"{path}: missing dataset {key!r} (found: {', '.join(handle.keys()) or 'none'})")
    item = handle[key]
    if not isinstance(item, h5py.Dataset):
        raise DataError(f"{path}: {key!r} must be an array (HDF5 dataset), got a {type(item).__name__}")
    return item


def _split(x: h5py.Dataset, y: h5py.Dataset, info: DatasetInfo, origin: str) -> Split:
    if x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(f"{origin}: images must have shape (N, H, W, 3), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{origin}: the split is empty")
    try:
        labels = np.asarray(y[()]).reshape(y.shape[0], -1)
    except OSError as exc:
        raise DataError(f"{origin}: labels could not be read ({exc})") from None
    return Split(x, normalise_labels(labels, x.shape[0], info, origin), origin=origin, checked=False)


def load_pcam(path: Path, *, split_seed: int = 0) -> Dataset:
    info = DatasetInfo(name="pcam", task=BINARY, class_names=PCAM_CLASSES, n_channels=3,
                       image_size=(96, 96), critical_classes=(1,), citation=PCAM_CITATION,
                       license="CC0", source=str(path))
    if path.is_dir():
        splits = {}
        for official, ours in _PCAM_SPLITS.items():
            xf = path / f"camelyonpatch_level_2_split_{official}_x.h5"
            yf = path / f"camelyonpatch_level_2_split_{official}_y.h5"
            if xf.is_file() and yf.is_file():
                splits[ours] = _split(_open(xf, "x"), _open(yf, "y"), info, str(xf))
        if "train" not in splits and "test" not in splits:
            raise DataError(f"{path}: no PatchCamelyon files (camelyonpatch_level_2_split_*_x.h5) found")
        return Dataset(info, splits)
    x, y = _open(path, "x"), _open(path, "y")
    whole = _split(x, y, info, str(path))
    parts = stratified_split(whole.labels.numpy(), DEFAULT_FRACTIONS, seed=split_seed)
    note = (f"{path.name} is one file: medfool made a stratified split (train 70%, val 10%, test 20%, "
            f"seed {split_seed})")
    info = replace(info, image_size=(int(x.shape[1]), int(x.shape[2])), notes=(note,))
    return Dataset(info, {s: whole.subset(idx) for s, idx in parts.items()})
