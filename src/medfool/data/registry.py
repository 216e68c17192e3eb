"""One entry point for every dataset: ``load_dataset("pathmnist")``, a path, or ``"synthetic"``.

Resolution order for a name: the MedMNIST catalogue (file looked up in --data-dir,
$MEDFOOL_DATA_DIR, then the user cache; downloaded when missing and allowed), then datasets
described by JSON sidecars in those folders (e.g. ``lc25000_lung``). A path picks its loader
by what it is: ``.npz``, ``.h5``/PCam folder, ``.csv`` manifest, or a class-per-folder tree.
"""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from medfool.data.catalog import MEDMNIST, MEDMNIST_CITATION, SIZES
from medfool.data.dataset import Dataset, DatasetInfo, confined
from medfool.data.download import download, md5sum
from medfool.data.folder import load_image_folder, load_manifest
from medfool.data.locate import cache_dir, data_dirs, find_file, find_sidecars
from medfool.data.npz import load_npz, read_sidecar
from medfool.data.pcam import load_pcam
from medfool.data.synthetic import make_synthetic
from medfool.data.windowing import NativeOptions
from medfool.errors import DataError, DownloadError
from medfool.vocab import MULTI_CLASS

__all__ = ["Available", "list_datasets", "load_dataset", "load_path"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Available:
    """One row of ``medfool datasets``."""

    name: str
    kind: str
    path: Path | None
    detail: str


def _parse_name(spec: str, size: int | None) -> tuple[str, int | None]:
    """'pathmnist_64' -> ('pathmnist', 64); an explicit size must agree with the suffix."""
    base, _, suffix = spec.rpartition("_")
    if base and suffix.isdigit():
        if size is not None and size != int(suffix):
            raise DataError(f"dataset {spec!r} names size {suffix} but --size {size} was given")
        return base, int(suffix)
    return spec, size


def _sidecar_datasets(dirs: list[Path]) -> dict[str, tuple[Path, dict[str, object]]]:
    found: dict[str, tuple[Path, dict[str, object]]] = {}
    for path in find_sidecars(dirs):
        try:
            meta = read_sidecar(path)
        except DataError:
            continue
        if isinstance(meta.get("files"), dict) and meta.get("name"):
            found.setdefault(str(meta["name"]), (path, meta))
    return found


def _load_medmnist(name: str, size: int, dirs: list[Path], allow_download: bool, split_seed: int) -> Dataset:
    entry = MEDMNIST[name]
    if size not in SIZES:
        raise DataError(f"MedMNIST size must be one of {SIZES}, got {size}")
    filename = entry.filename(size)
    path = find_file(filename, dirs)
    if path is None:
        if not allow_download:
            raise DataError(f"{filename} not found in {', '.join(map(str, dirs))} (downloads are disabled)")
        target = cache_dir() / filename
        log.warning("%s not found locally; downloading it to %s", filename, target)
        try:
            path = download(entry.url(size), target, entry.md5[size])
        except DownloadError as exc:
            raise DownloadError(f"{exc}. Put {filename} in --data-dir or $MEDFOOL_DATA_DIR") from None
    info = DatasetInfo(
        name=name if size == 28 else f"{name}_{size}", task=entry.task, class_names=entry.labels,
        n_channels=entry.n_channels, image_size=(size, size), critical_classes=entry.critical,
        citation=f"{MEDMNIST_CITATION} Source data: {entry.source}.", license=entry.license,
    )
    return load_npz(path, info, split_seed=split_seed)


def load_dataset(spec: str, *, size: int | None = None, data_dir: str | os.PathLike[str] | None = None,
                 allow_download: bool = True, split_seed: int = 0, allow_outside_paths: bool = False,
                 native: NativeOptions | None = None) -> Dataset:
    """Load a dataset by name or path; see the module docstring for the lookup order. Files named
    by a manifest or a sidecar must lie inside its folder unless ``allow_outside_paths``."""
    if spec == "synthetic":
        return make_synthetic(size=size or 28, seed=split_seed)
    path = Path(spec).expanduser()
    if path.exists() or any(sep in spec for sep in ("/", os.sep)) or path.suffix in (".npz", ".h5", ".csv"):
        return load_path(path, size=size, split_seed=split_seed, allow_outside_paths=allow_outside_paths,
                         native=native)
    dirs = data_dirs(data_dir)
    name, wanted = _parse_name(spec.lower(), size)
    if name in MEDMNIST:
        return _load_medmnist(name, wanted or 28, dirs, allow_download, split_seed)
    sidecars = _sidecar_datasets(dirs)
    if name in sidecars:
        sidecar, meta = sidecars[name]
        raw_files = meta["files"]
        assert isinstance(raw_files, dict)  # guaranteed by _sidecar_datasets
        files = {str(k): str(v) for k, v in raw_files.items()}
        key = str(wanted or min(files, key=lambda s: int(s) if s.isdigit() else 0))
        if key not in files:
            raise DataError(f"{sidecar}: {name} comes in sizes {', '.join(files)}, not {key}")
        dataset = load_npz(confined(sidecar.parent, files[key], f"{sidecar} ['files'][{key!r}]", allow_outside_paths),
                           split_seed=split_seed)
        smallest = min(int(k) for k in files if k.isdigit()) if any(k.isdigit() for k in files) else None
        label = name if not key.isdigit() or int(key) == smallest else f"{name}_{key}"
        dataset.info = replace(dataset.info, name=label)
        return dataset
    known = sorted([*MEDMNIST, *sidecars, "synthetic"])
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise DataError(f"unknown dataset {spec!r}{hint} (known: {', '.join(known)}; or give a path)")


def load_path(path: Path, *, size: int | None = None, split_seed: int = 0,
              allow_outside_paths: bool = False, native: NativeOptions | None = None) -> Dataset:
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        return load_npz(path, split_seed=split_seed)
    if path.suffix in (".h5", ".hdf5"):
        return load_pcam(path, split_seed=split_seed)
    if path.suffix == ".csv":
        return load_manifest(path, size=size, split_seed=split_seed, allow_outside_paths=allow_outside_paths,
                             native=native)
    if path.is_dir():
        if any(path.glob("camelyonpatch_level_2_split_*_x.h5")):
            return load_pcam(path, split_seed=split_seed)
        return load_image_folder(path, size=size, split_seed=split_seed, native=native)
    raise DataError(f"{path}: unsupported dataset file (use .npz, .h5, .csv or a folder of class folders of "
                    "images, DICOM or NIfTI files)")


def list_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[Available]:
    """What ``medfool datasets`` shows: found files first, then what could be downloaded."""
    dirs = data_dirs(data_dir)
    rows: list[Available] = []
    for name, entry in MEDMNIST.items():
        for s in SIZES:
            path = find_file(entry.filename(s), dirs)
            if path is not None:
                official = md5sum(path) == entry.md5[s]
                rows.append(Available(name if s == 28 else f"{name}_{s}", "medmnist", path,
                                      f"{entry.task}, {len(entry.labels)} classes"
                                      + ("" if official else ", not the official file (MD5 differs)")))
    for name, (sidecar, meta) in _sidecar_datasets(dirs).items():
        files = meta["files"]
        assert isinstance(files, dict)
        for s, fname in files.items():
            if (sidecar.parent / str(fname)).is_file():
                rows.append(Available(name if str(s) == "28" else f"{name}_{s}", "sidecar",
                                      sidecar.parent / str(fname), str(meta.get("task", MULTI_CLASS))))
    found = {r.name for r in rows}
    for name, entry in MEDMNIST.items():
        if name not in found:
            rows.append(Available(name, "medmnist (download)", None,
                                  f"{entry.task}, {len(entry.labels)} classes, sizes {'/'.join(map(str, SIZES))}"))
    rows.append(Available("synthetic", "generated", None, "3 patterns, for tests only (not medical)"))
    return rows
