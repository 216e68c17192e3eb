"""Plain image files: a folder with one sub-folder per class, or a CSV manifest (path,label).

The files may be PNG/JPEG/TIFF images, DICOM files (``.dcm``) or NIfTI images and volumes
(``.nii``, ``.nii.gz``; a volume gives one image per slice); DICOM and NIfTI values go through
one window into [0, 1] (:mod:`medfool.data.windowing`), kept in the dataset's info so budgets
can be stated in native units.

A folder may hold ``train/``, ``val/`` and ``test/`` sub-folders (each with class folders);
otherwise its images are split with the documented stratified split. Without ``val/``, the
validation split is carved out of ``train/`` the same way (seeded by the split seed). Images of different
sizes are refused unless a target ``size`` is given, then they are resized (bilinear).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

from medfool.data.dataset import Dataset, DatasetInfo, confined, make_split
from medfool.data.dicom import DICOM_SUFFIXES, dicom_header, read_dicom
from medfool.data.nifti import is_nifti, read_nifti
from medfool.data.split import DEFAULT_FRACTIONS, carve_from_train, stratified_split
from medfool.data.windowing import NativeImage, NativeOptions, Window, choose_window
from medfool.errors import DataError
from medfool.utils.progress import progress
from medfool.vocab import BINARY, MULTI_CLASS, SPLITS

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "load_image_folder", "load_manifest"]

MAX_PIXELS = 50_000_000  # one decoded image; a header claiming more is refused before decoding
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """16-bit (and 32-bit integer) greyscale scaled by its bit depth to 8 bits: converting it
    with PIL would clip every value above 255 to white."""
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return image.copy()
    arr = np.asarray(image).astype(np.float64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DataError(f"{path}: integer image with values outside 0..65535 (a 16-bit image is expected)")
    return Image.fromarray(np.round(arr * (255.0 / 65535.0)).astype(np.uint8), "L")


def _read_images(files: Sequence[Path], size: int | None) -> np.ndarray:
    """Decode files into one (N, H, W, C) uint8 array; grey only if every file is grey."""
    decoded: list[Image.Image] = []
    for f in progress(files, desc="read images", unit="img"):
        try:
            with Image.open(f) as opened:
                if opened.width * opened.height > MAX_PIXELS:
                    raise DataError(f"{f}: header claims {opened.width} x {opened.height} pixels, over the "
                                    f"{MAX_PIXELS:,}-pixel limit for one image")
                opened.load()
                decoded.append(_eight_bit(opened, f))
        except Image.DecompressionBombError:
            raise DataError(f"{f}: header claims more than {MAX_PIXELS:,} pixels (a decompression bomb, or not "
                            "an image medfool can hold)") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{f}: unreadable image ({exc})") from None
    grey = all(d.mode in ("L", "1") for d in decoded)
    mode = "L" if grey else "RGB"
    target = (size, size) if size else decoded[0].size
    arrays = []
    for f, original in zip(files, decoded, strict=True):
        im = original.convert(mode)
        if im.size != target:
            if size is None:
                raise DataError(f"{f}: size {im.size[0]}x{im.size[1]} differs from {target[0]}x{target[1]} "
                                "of the first image (pass an image size to resize)")
            im = im.resize(target, Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        arrays.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.stack(arrays)


def _is_native(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES or is_nifti(path)


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or _is_native(path)


def _resize_float(pixels: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) float32 -> (size, size, C), bilinear, antialiased when shrinking."""
    t = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    shrink = t.shape[-1] > size or t.shape[-2] > size
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return out[0].permute(1, 2, 0).clamp(0, 1).numpy()


def _read_one(f: Path, options: NativeOptions) -> list[NativeImage]:
    return read_nifti(f, options.slice_axis) if is_nifti(f) else [read_dicom(f)]


def _read_native(files: dict[str, list[Path]], labels: dict[str, list[int]], size: int | None,
                 options: NativeOptions) -> tuple[dict[str, np.ndarray], dict[str, list[int]], dict[str, list[str]],
                                                  Window, str]:
    """DICOM and NIfTI files of every split through one window: (N, H, W, C) float32 per split,
    the labels (a volume's slices share its file's label), each image's file (a DICOM file's
    own path; a NIfTI slice's path#slice), the window and why it was chosen. The window comes
    from the headers where it can (an extra pass over the pixels only for the data's range),
    then each file is windowed and resized as it is read: memory holds the [0, 1] images at
    their final size, never a dataset of native 16-bit slices."""
    every = [f for fs in files.values() for f in fs]
    for f in every:
        if not _is_native(f):
            raise DataError(f"{f}: the dataset mixes DICOM/NIfTI files with plain images; use one kind")
    heads = [(None, "native units", False) if is_nifti(f) else dicom_header(f) for f in every]
    grey = [h for h in heads if not h[2]]

    def data_range() -> tuple[float, float]:
        lo, hi = math.inf, -math.inf
        for f in progress(every, desc="value range", unit="file"):
            for im in _read_one(f, options):
                if not im.colour:
                    lo, hi = min(lo, float(im.native.min())), max(hi, float(im.native.max()))
        return (lo, hi) if lo <= hi else (0.0, 1.0)

    window, why = choose_window(options.window, [h[0] for h in grey], grey[0][1] if grey else "", data_range)
    colour = any(h[2] for h in heads)
    arrays: dict[str, np.ndarray] = {}
    out_labels: dict[str, list[int]] = {}
    origins: dict[str, list[str]] = {}
    target: tuple[int, int] | None = (size, size) if size else None
    for split, fs in files.items():
        stack, out_labels[split], origins[split] = [], [], []
        for f, label in zip(progress(fs, desc=f"read {split}", unit="file"), labels[split], strict=True):
            images = _read_one(f, options)
            for k, im in enumerate(images):
                px = im.pixels(window)
                if colour and px.shape[-1] == 1:
                    px = np.repeat(px, 3, axis=-1)
                if target is None:
                    target = (px.shape[0], px.shape[1])
                if px.shape[:2] != target:
                    if size is None:
                        raise DataError(f"{f}: size {px.shape[1]}x{px.shape[0]} differs from {target[1]}x"
                                        f"{target[0]} of the first image (pass an image size to resize)")
                    px = _resize_float(px, size)
                stack.append(px)
                origins[split].append(f"{f}#{options.slice_axis}:{k}" if is_nifti(f) else str(f))
            out_labels[split] += [label] * len(images)
        if stack:
            arrays[split] = np.stack(stack).astype(np.float32)
    return arrays, out_labels, origins, window, why


def _finish(name: str, source: Path, files: dict[str, list[Path]], labels: dict[str, list[int]],
            classes: list[str], size: int | None, split_seed: int, native: NativeOptions | None = None) -> Dataset:
    if not any(files.values()):
        raise DataError(f"{source}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, "
                        f"{', '.join(sorted(DICOM_SUFFIXES))}, .nii, .nii.gz)")
    first = next(f for fs in files.values() for f in fs)
    window: Window | None = None
    notes: tuple[str, ...] = ()
    origins: dict[str, list[str]] = {}
    if _is_native(first):
        files = {s: fs for s, fs in files.items() if fs}
        images, labels, origins, window, why = _read_native(files, labels, size, native or NativeOptions())
        notes = (f"{window.unit or 'native'} window {window.centre:g}/{window.width:g} (centre/width: [0, 1] is "
                 f"{window.low:g} to {window.high:g} {window.unit}), {why}",)
    else:
        images = {s: _read_images(fs, size) for s, fs in files.items() if fs}
    n_ch = next(iter(images.values())).shape[-1]
    if any(a.shape[-1] != n_ch for a in images.values()):
        images = {s: np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for s, a in images.items()}
        n_ch = 3
    h, w = next(iter(images.values())).shape[1:3]
    info = DatasetInfo(name=name, task=BINARY if len(classes) == 2 else MULTI_CLASS,
                       class_names=tuple(classes), n_channels=n_ch, image_size=(h, w), source=str(source),
                       window=window, notes=notes)
    if len(classes) < 2:
        raise DataError(f"{source}: needs at least 2 classes, found {len(classes)} ({first.parent.name})")
    splits = {s: make_split(images[s], np.array(labels[s]), info, f"{source}[{s}]", files=origins.get(s))
              for s in images}
    if set(splits) == {"all"}:
        whole = splits.pop("all")
        parts = stratified_split(whole.labels.numpy(), DEFAULT_FRACTIONS, seed=split_seed)
        for s, idx in parts.items():
            if len(idx) == 0:
                raise DataError(f"{source}: too few images to make a non-empty {s!r} split")
            splits[s] = whole.subset(idx)
        made = (f"{source.name} has no train/val/test split: medfool made a stratified split (train 70%, val 10%, "
                f"test 20%, seed {split_seed})")
        info = replace(info, notes=(*info.notes, made))
    elif "train" not in splits:
        raise DataError(f"{source}: has split folders but no 'train' split")
    elif "val" not in splits:  # train/ and test/ (a common layout): validation comes out of train
        carved, note = carve_from_train(splits["train"], ["val"], split_seed, source.name)
        splits.update(carved.items())
        info = replace(info, notes=(*info.notes, note))
    return Dataset(info, {s: splits[s] for s in SPLITS if s in splits})


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_image_file(p) and p.is_file())


def load_image_folder(root: Path, *, size: int | None = None, split_seed: int = 0,
                      native: NativeOptions | None = None) -> Dataset:
    """``root/<class>/*.png`` or ``root/{train,val,test}/<class>/*.png``."""
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    subdirs = _class_dirs(root)
    split_dirs = {_SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in _SPLIT_ALIASES}
    if split_dirs:
        classes = sorted({c.name for d in split_dirs.values() for c in _class_dirs(d)})
        layout = {s: d for s, d in split_dirs.items()}
    else:
        classes = [d.name for d in subdirs]
        layout = {"all": root}
    files: dict[str, list[Path]] = {}
    labels: dict[str, list[int]] = {}
    for split, folder in layout.items():
        files[split], labels[split] = [], []
        for ci, cls in enumerate(classes):
            found = _images_in(folder / cls) if (folder / cls).is_dir() else []
            if (folder / cls).is_dir() and not found:
                raise DataError(f"{folder / cls}: class folder holds no images "
                                f"({', '.join(sorted(IMAGE_SUFFIXES))}); remove it or add its images")
            files[split] += found
            labels[split] += [ci] * len(found)
    return _finish(root.name, root, files, labels, classes, size, split_seed, native)


def load_manifest(path: Path, *, size: int | None = None, split_seed: int = 0,
                  allow_outside_paths: bool = False, native: NativeOptions | None = None) -> Dataset:
    """A CSV with columns ``path,label`` (and optionally ``split``); paths relative to the CSV and
    inside its folder unless ``allow_outside_paths``."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV manifest ({exc})") from None
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    if not {"path", "label"} <= set(rows[0]):
        raise DataError(f"{path}: the manifest needs columns 'path' and 'label', got {', '.join(rows[0])}")
    for line, r in enumerate(rows, start=2):
        if not (r.get("label") or "").strip() or not (r.get("path") or "").strip():
            raise DataError(f"{path}:{line}: the row needs a path and a label")
    raw_labels = [r["label"].strip() for r in rows]
    if all(lab.isdigit() for lab in raw_labels):
        n = max(int(lab) for lab in raw_labels) + 1
        classes = [f"class_{i}" for i in range(n)]
        index = [int(lab) for lab in raw_labels]
    else:
        classes = sorted(set(raw_labels))
        index = [classes.index(lab) for lab in raw_labels]
    files: dict[str, list[Path]] = {}
    labels: dict[str, list[int]] = {}
    for line, (row, label) in enumerate(zip(rows, index, strict=True), start=2):
        split = _SPLIT_ALIASES.get((row.get("split") or "all").strip().lower())
        if split is None and row.get("split"):
            raise DataError(f"{path}:{line}: unknown split {row['split']!r} (use train, val or test)")
        split = split or "all"
        f = confined(path.parent, row["path"].strip(), f"{path}:{line}", allow_outside_paths)
        if not f.is_file():
            raise DataError(f"{path}:{line}: image file not found: {row['path']}")
        files.setdefault(split, []).append(f)
        labels.setdefault(split, []).append(label)
    if "all" in files and len(files) > 1:
        raise DataError(f"{path}: some rows have a split and others do not")
    return _finish(path.stem, path, files, labels, classes, size, split_seed, native)
