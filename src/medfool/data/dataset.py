"""The in-memory shape of every dataset medfool reads.

Images are *stored* compactly (uint8 NHWC, as on disk, or a lazy HDF5 view) and *served* as
float32 NCHW in [0, 1], the one pixel space every attack and model in medfool speaks.
Labels are int64: shape (N,) for multi-class and binary tasks, (N, L) of 0/1 for multi-label.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from medfool.data.windowing import Window
from medfool.errors import DataError
from medfool.vocab import BINARY, MULTI_LABEL, SPLITS, TASKS, SplitName, Task

__all__ = [
    "SPLITS",
    "TASKS",
    "Dataset",
    "DatasetInfo",
    "ImageSource",
    "Split",
    "as_nhwc",
    "benign_class",
    "check_pixels",
    "confined",
    "make_split",
    "normalise_labels",
    "to_float_nchw",
]


class ImageSource(Protocol):
    """Anything that can hand out images by index: a NumPy array, an HDF5 dataset."""

    shape: tuple[int, ...]

    def __getitem__(self, index: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the data it classifies."""

    name: str
    task: Task
    class_names: tuple[str, ...]
    n_channels: int
    image_size: tuple[int, int]
    critical_classes: tuple[int, ...] = ()
    citation: str = ""
    license: str = ""
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    # DICOM / NIfTI data: how [0, 1] maps to native units (Hounsfield units, grey levels)
    window: Window | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"{self.source or self.name}: task must be one of {TASKS}, got {self.task!r}")
        if self.task == BINARY and len(self.class_names) != 2:
            raise DataError(f"{self.source or self.name}: a binary task needs 2 class names, "
                            f"got {len(self.class_names)}")
        if len(self.class_names) < 2 and self.task != MULTI_LABEL:
            raise DataError(f"{self.source or self.name}: needs at least 2 classes, got {len(self.class_names)}")
        bad = [c for c in self.critical_classes if not 0 <= c < len(self.class_names)]
        if bad:
            raise DataError(f"{self.source or self.name}: critical class index {bad[0]} is out of range "
                            f"for {len(self.class_names)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by name (case-insensitive) or index, with a helpful error."""
        if isinstance(name_or_index, int) or str(name_or_index).isdigit():
            idx = int(name_or_index)
            if not 0 <= idx < self.num_classes:
                raise DataError(f"class index must be in [0, {self.num_classes - 1}], got {idx}")
            return idx
        lowered = [c.lower() for c in self.class_names]
        key = str(name_or_index).lower().strip()
        if key in lowered:
            return lowered.index(key)
        partial = [i for i, c in enumerate(lowered) if key and key in c]
        if len(partial) == 1:  # "benign" for "benign lung tissue"
            return partial[0]
        if len(partial) > 1:
            raise DataError(f"class {name_or_index!r} is ambiguous for {self.name}: it matches "
                            f"{', '.join(self.class_names[i] for i in partial)}")
        close = difflib.get_close_matches(key, lowered, n=1)
        hint = f"; did you mean {self.class_names[lowered.index(close[0])]!r}?" if close else ""
        raise DataError(f"unknown class {name_or_index!r} for {self.name}{hint} "
                        f"(classes: {', '.join(self.class_names)})")


class Split:
    """One split (train/val/test) of a dataset: images served as float32 NCHW in [0, 1].

    ``images`` is (N, H, W, C) uint8 (or float in [0, 1]); it may be lazy (HDF5), in which
    case pixels are checked batch by batch as they are read.
    """

    def __init__(self, images: ImageSource, labels: np.ndarray, *, origin: str, checked: bool,
                 files: Sequence[str] | None = None) -> None:
        self._images = images
        self.labels = torch.as_tensor(np.ascontiguousarray(labels), dtype=torch.int64)
        self.origin = origin
        self._checked = checked
        # the file each row came from, where there is one per row (DICOM: written back there)
        self.files: tuple[str, ...] | None = tuple(files) if files is not None else None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one served image."""
        _, h, w, c = self._images.shape
        return (c, h, w)

    def get(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (n, C, H, W) float32 in [0, 1] and labels for the given indices."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for a split of {len(self)} images")
        raw = self.raw(idx)
        if not self._checked:
            check_pixels(raw, self.origin)
        return to_float_nchw(raw), self.labels[torch.as_tensor(idx)]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split at once (fine for MedMNIST-sized sets; use ``get`` for PCam)."""
        return self.get(np.arange(len(self)))

    def sample_index(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to ``n`` indices drawn at random (seeded), in increasing order; all of them when the
        split is smaller. Splits are often stored sorted by class, so "the first n" is biased."""
        if n >= len(self):
            return np.arange(len(self))
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return pick.sort().values.numpy()

    def raw(self, index: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored rows (N, H, W, C) as they are on disk (uint8 or float), in ``index`` order."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        order = np.argsort(idx, kind="stable")  # HDF5 needs increasing indices
        return np.asarray(self._images[idx[order]])[np.argsort(order, kind="stable")]

    def replace(self, index: np.ndarray, images: torch.Tensor, labels: np.ndarray) -> Split:
        """A new split with the rows at ``index`` replaced by ``images`` (n, C, H, W) in [0, 1]
        and every label replaced by ``labels``; other rows are served unchanged, from the same
        storage (no copy, so lazy HDF5 sets stay lazy). Replaced rows are stored in the
        source's pixel type: uint8 sources get the images rounded to whole levels, as an image
        file written by whoever changed them would hold."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        if images.shape[0] != idx.size or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"replace needs {idx.size} images of shape {self.image_shape}, got {tuple(images.shape)}")
        rows = images.detach().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
        dtype = self._images[np.arange(1)].dtype if len(self) else np.dtype(np.uint8)
        rows = np.rint(rows * 255).astype(np.uint8) if dtype == np.uint8 else rows.astype(dtype)
        return Split(_OverlaySource(self._images, idx, rows), labels, origin=self.origin, checked=self._checked,
                     files=self.files)

    def subset(self, index: np.ndarray) -> Split:
        idx = np.asarray(index, dtype=np.int64)
        files = [self.files[i] for i in idx] if self.files is not None else None
        if isinstance(self._images, np.ndarray):
            return Split(self._images[idx], self.labels.numpy()[idx], origin=self.origin, checked=self._checked,
                         files=files)
        return Split(_IndexedSource(self._images, idx), self.labels.numpy()[idx],
                     origin=self.origin, checked=self._checked, files=files)


class _IndexedSource:
    """A lazy view of another source through an index array (keeps HDF5 sets lazy after a split)."""

    def __init__(self, base: ImageSource, index: np.ndarray) -> None:
        self._base, self._index = base, index
        self.shape = (len(index), *base.shape[1:])

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        inner = self._index[index]
        order = np.argsort(inner, kind="stable")
        out = np.asarray(self._base[inner[order]])
        return out[np.argsort(order, kind="stable")]


class _OverlaySource:
    """Another source with some rows replaced (a poisoned training set over the clean one)."""

    def __init__(self, base: ImageSource, index: np.ndarray, rows: np.ndarray) -> None:
        self._base, self._rows = base, rows
        self._replaced = np.zeros(base.shape[0], dtype=bool)
        self._replaced[index] = True
        self._slot = np.full(base.shape[0], -1, dtype=np.int64)
        self._slot[index] = np.arange(len(index))
        self.shape = base.shape

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        idx = np.asarray(index, dtype=np.int64)
        out = np.asarray(self._base[idx])
        hit = self._replaced[idx]
        if hit.any():
            out = out.copy()
            out[hit] = self._rows[self._slot[idx[hit]]]
        return out


@dataclass
class Dataset:
    """A named dataset: its metadata and its splits."""

    info: DatasetInfo
    splits: dict[SplitName, Split]

    def split(self, name: SplitName) -> Split:
        if name not in self.splits:
            raise DataError(f"{self.info.name} has no {name!r} split (it has: {', '.join(self.splits)})")
        return self.splits[name]

    def summary(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items())
        c, h, w = next(iter(self.splits.values())).image_shape
        return f"{self.info.name}: {self.info.task}, {self.info.num_classes} classes, {c}x{h}x{w}, {sizes}"


def benign_class(class_names: Sequence[str], critical: Sequence[int]) -> int:
    """The class an attacker wants a diagnosis to become: the first non-critical class named
    benign or normal (a cancer read as benign is the dangerous flip), else the first
    non-critical class."""
    names = [c.lower() for c in class_names]
    benign = [i for i, c in enumerate(names) if i not in critical and ("benign" in c or "normal" in c)]
    others = [i for i in range(len(names)) if i not in critical]
    return (benign or others or [0])[0]


def to_float_nchw(raw: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 or float -> float32 (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(raw))
    t = t.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    if t.dtype == torch.uint8:
        return t.to(torch.float32).div_(255.0)
    return t.to(torch.float32)


def check_pixels(images: np.ndarray, origin: str) -> None:
    """Refuse NaNs, infinities and float pixels outside [0, 1]; uint8 needs no check."""
    if images.dtype == np.uint8:
        return
    if not np.issubdtype(images.dtype, np.floating):
        if np.issubdtype(images.dtype, np.integer):
            lo, hi = (int(images.min()), int(images.max())) if images.size else (0, 0)
            if lo < 0 or hi > 255:
                raise DataError(f"{origin}: integer pixels must be in [0, 255], found values in [{lo}, {hi}]")
            return
        raise DataError(f"{origin}: pixels must be uint8 or float, got dtype {images.dtype}")
    finite = np.isfinite(images)
    if not finite.all():
        n_bad = int((~finite).sum())
        raise DataError(f"{origin}: {n_bad} pixel value(s) are NaN or infinite")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise DataError(f"{origin}: float pixels must be in [0, 1], found values in "
                        f"[{float(images.min()):.3g}, {float(images.max()):.3g}]")


def confined(base: Path, relative: str, origin: str, allow_outside: bool) -> Path:
    """``relative`` resolved against the folder ``base``; a path that leaves the folder (``..``,
    an absolute path, a symlink out) is refused unless ``allow_outside`` (files named by a
    manifest or sidecar are untrusted input)."""
    target = (base / relative).resolve()
    if not allow_outside and not target.is_relative_to(base.resolve()):
        raise DataError(f"{origin}: path {relative!r} leaves the folder {base} (pass --allow-outside-paths to "
                        "allow it)")
    return target


def as_nhwc(images: np.ndarray, origin: str) -> np.ndarray:
    """Accept (N, H, W), (N, H, W, 1) or (N, H, W, 3); return (N, H, W, C)."""
    if images.ndim == 3:
        return images[..., None]
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images
    raise DataError(f"{origin}: images must have shape (N, H, W) or (N, H, W, C) with C in (1, 3), "
                    f"got {tuple(images.shape)}")


def normalise_labels(labels: np.ndarray, n_images: int, info: DatasetInfo, origin: str) -> np.ndarray:
    """Check labels against the task and class count; return int64 (N,) or (N, L)."""
    labels = np.asarray(labels)
    if labels.shape[0] != n_images:
        raise DataError(f"{origin}: {labels.shape[0]} labels for {n_images} images")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
            or labels.dtype == np.bool_):
        raise DataError(f"{origin}: labels must be integers, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.isfinite(labels).all():
            raise DataError(f"{origin}: labels contain NaN or infinite values")
        if not np.all(labels == np.round(labels)):
            raise DataError(f"{origin}: labels must be whole numbers")
    labels = labels.astype(np.int64)
    k = info.num_classes
    if info.task == MULTI_LABEL:
        if labels.ndim != 2 or labels.shape[1] != k:
            raise DataError(f"{origin}: multi-label labels must have shape (N, {k}), got {tuple(labels.shape)}")
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise DataError(f"{origin}: multi-label labels must be 0 or 1")
        return labels
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{origin}: labels must have shape (N,) or (N, 1), got {tuple(labels.shape)}")
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= k:
            raise DataError(f"{origin}: labels must be in [0, {k - 1}] for {k} classes, "
                            f"found values in [{lo}, {hi}]")
    return labels


def make_split(images: np.ndarray, labels: np.ndarray, info: DatasetInfo, origin: str,
               files: Sequence[str] | None = None) -> Split:
    """Validate an in-memory split completely (shape, pixels, labels, non-empty) and wrap it."""
    images = as_nhwc(np.asarray(images), origin)
    if images.shape[0] == 0:
        raise DataError(f"{origin}: the split is empty")
    if images.shape[-1] != info.n_channels:
        raise DataError(f"{origin}: expected {info.n_channels} channel(s), got {images.shape[-1]}")
    check_pixels(images, origin)
    return Split(images, normalise_labels(labels, images.shape[0], info, origin), origin=origin, checked=True,
                 files=files)
