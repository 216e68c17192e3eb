"""Readers for the MedMNIST ``.npz`` layout and its JSON sidecar (bring-your-own datasets).

The layout: ``train_images``/``train_labels`` (and ``val_``/``test_``), images uint8
(N, H, W) or (N, H, W, 3), labels (N, 1) or (N, L). The sidecar is a small JSON beside the
file (same stem, or any JSON whose ``files`` names it) with ``name``, ``task``, ``label``
(index -> name), ``n_channels`` and optionally ``critical_labels``/``malignant_labels``,
``citation`` and ``license``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medfool.data.dataset import Dataset, DatasetInfo, as_nhwc, make_split
from medfool.data.split import carve_from_train
from medfool.errors import DataError
from medfool.utils.io import read_json_object
from medfool.vocab import BINARY, MULTI_CLASS, MULTI_LABEL, SPLITS, SplitName, Task

__all__ = ["MAX_CLASSES", "info_from_sidecar", "load_npz", "read_sidecar", "sidecar_for"]

MAX_CLASSES = 10_000  # a file without a sidecar: its largest label says how many classes there are

# the task names sidecars use (MedMNIST's own among them) -> ours
_TASK_ALIASES: dict[str, Task] = {
    "multi-class": MULTI_CLASS, "multiclass": MULTI_CLASS, "ordinal-regression": MULTI_CLASS,
    "binary": BINARY, "binary-class": BINARY,
    "multi-label": MULTI_LABEL, "multi-label, binary-class": MULTI_LABEL, "multilabel": MULTI_LABEL,
}  # fmt: skip


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file, decompressed now, so a damaged file fails here with its name."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    if magic != b"PK\x03\x04":
        raise DataError(f"{path}: not a readable .npz file (not a zip archive: corrupt, or another format)")
    _check_headers(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file, truncated or corrupt ({exc})") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise DataError(f"{path}: contains pickled objects, which medfool refuses to load") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _check_headers(path: Path) -> None:
    """Read every array's header before any array: the bytes its shape and dtype claim must be
    what the archive holds (a 50 KB file claiming a 10^10-image array is refused, not allocated)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if not member.filename.endswith(".npy"):
                    continue
                key = member.filename[:-4]
                with archive.open(member) as handle:
                    version = np.lib.format.read_magic(handle)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
                    header = handle.tell()
                if dtype.hasobject:
                    raise DataError(f"{path}: key {key!r} contains pickled objects, which medfool refuses "
                                    "to load")
                claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if claimed > member.file_size - header:
                    raise DataError(f"{path}: key {key!r} claims shape {tuple(shape)} ({claimed:,} bytes) but the "
                                    f"file holds {max(0, member.file_size - header):,}: corrupt or forged header")
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file, truncated or corrupt ({exc})") from None


def read_sidecar(path: Path) -> dict[str, Any]:
    return read_json_object(path, DataError, "JSON sidecar")


def info_from_sidecar(meta: dict[str, Any], *, source: str, image_size: tuple[int, int]) -> DatasetInfo:
    """Turn a sidecar's JSON into a DatasetInfo, naming the file in every complaint."""
    task = _TASK_ALIASES.get(str(meta.get("task", MULTI_CLASS)).lower())
    if task is None:
        raise DataError(f"{source}: unknown task {meta.get('task')!r} (use multi-class, binary or multi-label)")
    labels = meta.get("label") or meta.get("labels")
    if isinstance(labels, dict):
        try:
            names = tuple(str(labels[str(i)]) for i in range(len(labels)))
        except KeyError as exc:
            raise DataError(f"{source}: 'label' keys must be 0..{len(labels) - 1}, missing {exc}") from None
    elif isinstance(labels, list):
        names = tuple(str(v) for v in labels)
    else:
        raise DataError(f"{source}: sidecar needs 'label' (index -> class name)")
    critical = meta.get("critical_labels", meta.get("malignant_labels", []))
    try:
        critical_t = tuple(int(c) for c in critical)
        channels = int(meta.get("n_channels", 0))
    except (TypeError, ValueError):
        raise DataError(f"{source}: 'critical_labels' must be class indices and 'n_channels' an integer") from None
    return DatasetInfo(
        name=str(meta.get("name") or Path(source).stem), task=task, class_names=names,
        n_channels=channels, image_size=image_size, critical_classes=critical_t,
        citation=str(meta.get("citation", "")), license=str(meta.get("license", meta.get("licence", ""))),
        source=source,
    )


def sidecar_for(npz_path: Path) -> Path | None:
    """The JSON describing ``npz_path``: same stem, or one whose ``files`` lists it."""
    same = npz_path.with_suffix(".json")
    if same.is_file():
        return same
    for candidate in sorted(npz_path.parent.glob("*.json")):
        try:
            meta = json.loads(candidate.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        files = meta.get("files") if isinstance(meta, dict) else None
        if isinstance(files, dict) and npz_path.name in map(str, files.values()):
            return candidate
    return None


def load_npz(path: Path, info: DatasetInfo | None = None, *, split_seed: int = 0) -> Dataset:
    """Load a MedMNIST-layout file. ``info`` comes from the catalogue, a sidecar, or is inferred.

    Splits missing from the file are carved from ``train`` with a seeded stratified split
    (see :data:`~medfool.data.split.DEFAULT_FRACTIONS`), and ``info.notes`` says so.
    """
    arrays = _read_arrays(path)
    present = [s for s in SPLITS if f"{s}_images" in arrays or f"{s}_labels" in arrays]
    if "train" not in present and not present:
        raise DataError(f"{path}: missing keys: expected 'train_images' and 'train_labels' "
                        f"(found: {', '.join(sorted(arrays)) or 'none'})")
    for s in present:
        for kind in ("images", "labels"):
            if f"{s}_{kind}" not in arrays:
                raise DataError(f"{path}: has '{s}_{'labels' if kind == 'images' else 'images'}' "
                                f"but is missing key '{s}_{kind}'")
    for s in present:  # every split's labels, before any is used
        lab = arrays[f"{s}_labels"]
        if lab.size and not (np.issubdtype(lab.dtype, np.number) or lab.dtype == np.bool_):
            raise DataError(f"{path}[{s}_labels]: labels must be integers, got dtype {lab.dtype}")
    first = as_nhwc(arrays[f"{present[0]}_images"], f"{path}[{present[0]}_images]")
    size = (int(first.shape[1]), int(first.shape[2]))
    if info is None:
        sidecar = sidecar_for(path)
        if sidecar is not None:
            info = info_from_sidecar(read_sidecar(sidecar), source=str(sidecar), image_size=size)
        else:
            info = _inferred_info(path, arrays, present, first.shape[-1], size)
    if info.n_channels == 0:
        info = replace(info, n_channels=int(first.shape[-1]))
    info = replace(info, image_size=size, source=str(path))

    splits = {s: make_split(arrays[f"{s}_images"], arrays[f"{s}_labels"], info, f"{path}[{s}]") for s in present}
    missing = [s for s in SPLITS if s not in splits]
    if missing:
        if "train" not in splits:
            raise DataError(f"{path}: has no train split to carve {', '.join(missing)} from")
        carved, note = carve_from_train(splits["train"], missing, split_seed, path.name)
        splits.update(carved)
        info = replace(info, notes=(*info.notes, note))
    return Dataset(info, {s: splits[s] for s in SPLITS if s in splits})


def _inferred_info(path: Path, arrays: dict[str, np.ndarray], present: list[SplitName], channels: int,
                   size: tuple[int, int]) -> DatasetInfo:
    """No sidecar: class names are class_0.. and the task follows from the label shape."""
    labels = arrays[f"{present[0]}_labels"]
    task: Task
    if labels.ndim == 2 and labels.shape[1] > 1:
        task, n = MULTI_LABEL, labels.shape[1]
    else:
        if labels.size and not np.issubdtype(labels.dtype, np.number):
            raise DataError(f"{path}: labels must be integers, got dtype {labels.dtype}")
        top = 0
        for s in present:
            lab = arrays[f"{s}_labels"]
            if not lab.size:
                continue
            if not np.isfinite(lab).all() or (lab != np.round(lab)).any() or lab.min() < 0 or lab.max() >= MAX_CLASSES:
                raise DataError(f"{path}[{s}_labels]: labels must be whole numbers in [0, {MAX_CLASSES - 1}] "
                                "(or give the file a JSON sidecar)")
            top = max(top, int(lab.max()))
        n = top + 1 if labels.size else 2
        n = max(n, 2)
        task = BINARY if n == 2 else MULTI_CLASS
    return DatasetInfo(name=path.stem, task=task, class_names=tuple(f"class_{i}" for i in range(n)),
                       n_channels=channels, image_size=size, source=str(path),
                       notes=(f"{path.name} has no JSON sidecar: class names are placeholders",))
