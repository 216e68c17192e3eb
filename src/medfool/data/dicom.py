"""DICOM images (pydicom, an optional extra: ``pip install 'medfool[dicom]'``) into the [0, 1]
attack space, and adversarial images back into DICOM files.

Reading follows the DICOM display pipeline (PS3.3 C.11): stored values -> modality LUT
(rescale slope / intercept: Hounsfield units for CT) -> VOI window -> [0, 1], inverted for
MONOCHROME1 (where high values display dark). The window is the one the user states, else the
files' own Window Center / Width (or the input range of a VOI LUT) where they agree, else the
range of the values in the data (:func:`medfool.data.windowing.choose_window`). The window is
linear, so every [0, 1] budget has a size in native units (``Window.native``) and an
adversarial image maps back to stored values exactly (:func:`write_dicom`), rounded to the
file's integer grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from medfool.data.windowing import NativeImage, Window
from medfool.errors import DataError
from medfool.utils.io import atomic_open

__all__ = ["DICOM_SUFFIXES", "StoredGrid", "dicom_header", "read_dicom", "stored_grid", "stored_size",
           "write_ct_phantoms", "write_ct_slice", "write_dicom"]

DICOM_SUFFIXES = {".dcm", ".dicom"}


def _pydicom() -> ModuleType:
    try:
        return import_module("pydicom")
    except ImportError:
        raise DataError("reading DICOM needs pydicom, which is not installed: pip install 'medfool[dicom]'") from None


def _first(value: Any) -> float:
    """Window Center/Width may be multi-valued; the first is the default view."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _unit(ds: Any) -> str:
    if ds.get("RescaleType"):
        return str(ds.RescaleType)
    if ds.get("Modality") == "CT":
        return "HU"
    return "grey levels"


def _dataset(path: Path, *, pixels: bool = True) -> Any:
    """The file's dataset (``pixels=False``: the header alone, nothing decoded), or one line
    saying why it cannot be read."""
    pydicom = _pydicom()
    errors = import_module("pydicom.errors")
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except errors.InvalidDicomError:
        raise DataError(f"{path}: not a DICOM file (no 'DICM' preamble)") from None
    except Exception as exc:  # noqa: BLE001  (pydicom raises many kinds on a damaged file)
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable DICOM file ({first})") from None


def _stored(ds: Any, path: Path) -> np.ndarray:
    if "PixelData" not in ds:
        raise DataError(f"{path}: the DICOM file holds no pixel data (PixelData is missing); it is not an image "
                        f"({ds.get('Modality', 'unknown modality')})")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"{path}: holds {int(ds.NumberOfFrames)} frames; medfool reads single-frame 2-D images "
                        "(export the frames as separate files)")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        arr = np.asarray(ds.pixel_array)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, TypeError) as exc:
        name = getattr(syntax, "name", str(syntax))
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise DataError(f"{path}: compressed transfer syntax '{name}' and no decoder for it is installed "
                            "(pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg, or decompress the file "
                            "with gdcmconv --raw)") from None
        raise DataError(f"{path}: cannot decode the pixel data ({str(exc).splitlines()[0][:160]})") from None
    return arr


def read_dicom(path: Path) -> NativeImage:
    """One DICOM file through its modality LUT (native units), not yet windowed."""
    ds = _dataset(path)
    arr = _stored(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3:
        if photometric.startswith("YBR") and not getattr(ds.file_meta.TransferSyntaxUID, "is_compressed", False):
            arr = import_module("pydicom.pixels").convert_color_space(arr, photometric, "RGB")
        top = float(2 ** int(ds.get("BitsStored", 8) or 8) - 1)
        return NativeImage(np.clip(arr.astype(np.float64) / top, 0, 1), "", False, None)
    if photometric == "PALETTE COLOR":
        raise DataError(f"{path}: PALETTE COLOR images are not supported (convert them to RGB)")
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D image, got pixel data of shape {arr.shape}")
    native = np.asarray(import_module("pydicom.pixels").apply_modality_lut(arr, ds), dtype=np.float64)
    if not np.isfinite(native).all():
        raise DataError(f"{path}: pixel data holds NaN or infinite values")
    unit = _unit(ds)
    return NativeImage(native, unit, photometric == "MONOCHROME1", _file_window(ds, unit, path))


def stored_size(path: Path) -> tuple[int, int]:
    """Rows and columns from the header alone (nothing decoded): a size check before a decode
    that an upload could make expensive."""
    ds = _dataset(path, pixels=False)
    try:
        return int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{path}: no readable Rows / Columns in the header") from None


def dicom_header(path: Path) -> tuple[Window | None, str, bool]:
    """From the header alone (no pixels decoded): the file's own window, its native unit and
    whether it is a colour image."""
    ds = _dataset(path, pixels=False)
    unit = _unit(ds)
    colour = int(ds.get("SamplesPerPixel", 1) or 1) == 3
    return (None if colour else _file_window(ds, unit, path)), unit, colour


def _file_window(ds: Any, unit: str, path: Path) -> Window | None:
    if "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
        except (TypeError, ValueError, IndexError):
            raise DataError(f"{path}: unreadable Window Center / Width") from None
        if w > 0:
            return Window(c, w, unit)
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        # the LUT's input range as a linear window: its shape is not applied, so that every
        # image maps back to stored values exactly
        desc = ds.VOILUTSequence[0].LUTDescriptor
        entries = int(desc[0]) or 65536
        return Window(float(desc[1]) + (entries - 1) / 2, float(max(entries - 1, 1)), unit)
    return None


@dataclass(frozen=True)
class StoredGrid:
    """The values a greyscale DICOM file can hold: stored integers in [lo, hi], native =
    stored * slope + intercept; ``inverted`` for MONOCHROME1."""

    slope: float
    intercept: float
    lo: int
    hi: int
    inverted: bool
    shape: tuple[int, int]  # rows, columns

    @classmethod
    def of(cls, ds: Any, path: Path) -> StoredGrid:
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise DataError(f"{path}: writing back is supported for greyscale images only")
        bits = int(ds.get("BitsStored", 16) or 16)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        return cls(float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0), lo, hi,
                   str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1",
                   (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)))

    def stored(self, pixels: np.ndarray, window: Window) -> np.ndarray:
        """The integers a file stores for [0, 1] ``pixels``: the inverse of the window and the
        modality LUT, rounded and clipped to the file's bits."""
        x = 1.0 - pixels if self.inverted else pixels
        return np.clip(np.rint((window.low + x * window.width - self.intercept) / self.slope), self.lo, self.hi)

    def snap(self, pixels: np.ndarray, window: Window) -> np.ndarray:
        """[0, 1] pixels moved to the nearest value this file can store (and back to [0, 1]):
        what an image written with :func:`write_dicom` reads back as."""
        back = np.clip((self.stored(pixels, window) * self.slope + self.intercept - window.low) / window.width,
                       0.0, 1.0)
        return 1.0 - back if self.inverted else back


def stored_grid(path: Path) -> StoredGrid:
    """The stored-value grid of a greyscale DICOM file, from its header alone."""
    return StoredGrid.of(_dataset(path, pixels=False), path)


def write_dicom(source: Path, pixels: np.ndarray, target: Path, *, window: Window, note: str) -> Path:
    """Write ``pixels`` ((H, W) or (H, W, 1) in [0, 1], the source's size) as a DICOM file that
    keeps the source's metadata: stored values on the source's grid (:class:`StoredGrid`, which
    also knows a MONOCHROME1 file's inversion); a new SOP Instance UID; the image marked DERIVED
    with ``note`` in its Image Comments and Derivation Description. Written atomically."""
    pydicom = _pydicom()
    ds = _dataset(source)
    _stored(ds, source)  # refuses files without (decodable) pixels, as reading does
    grid = StoredGrid.of(ds, source)
    img = np.asarray(pixels, dtype=np.float64)
    img = img[..., 0] if img.ndim == 3 else img
    if img.shape != grid.shape:
        raise DataError(f"{source}: the image to write is {img.shape}, the source is {grid.shape[0]}x{grid.shape[1]}")
    allocated, signed = int(ds.BitsAllocated), grid.lo < 0
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}.get(
        (allocated, signed))
    if dtype is None:
        raise DataError(f"{source}: writing back {allocated}-bit pixels is not supported (8 or 16 bits)")
    uid = import_module("pydicom.uid")
    if getattr(ds.file_meta.TransferSyntaxUID, "is_compressed", False):
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.PixelData = grid.stored(img, window).astype(dtype).tobytes()
    new_uid = uid.generate_uid()
    ds.SOPInstanceUID = new_uid
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid
    image_type = list(ds.get("ImageType", ["ORIGINAL", "PRIMARY"]))
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    ds.DerivationDescription = note[:1024]
    ds.ImageComments = note[:10240]
    ds.BurnedInAnnotation = ds.get("BurnedInAnnotation", "NO")
    with atomic_open(target) as handle:
        pydicom.dcmwrite(handle, ds, enforce_file_format=True)
    return target


def write_ct_slice(path: Path, hu: np.ndarray, *, window: tuple[float, float] | None = (40.0, 400.0),
                   photometric: str = "MONOCHROME2", modality: str = "CT") -> Path:
    """A single-frame CT slice holding ``hu`` (H, W) in Hounsfield units, stored as 12-bit signed
    values + 1024 (rescale intercept -1024), with ``window`` (centre, width) as its default view.
    For tests, benchmarks and demos: a phantom study with a made-up patient."""
    pydicom = _pydicom()
    FileMetaDataset = import_module("pydicom.dataset").FileMetaDataset
    uid = import_module("pydicom.uid")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.CTImageStorage
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = uid.CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "Test^Phantom", "MF0001", modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.clip(np.rint(np.asarray(hu) + 1024), -2048, 2047).astype(np.int16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_ct_phantoms(root: Path, *, n: int, size: int, seed: int = 0) -> Path:
    """A class-per-folder tree of ``n`` phantom CT slices per class under ``root``: soft tissue
    at 40 HU with 10 HU noise; 'lesion' slices add a +60 HU disc at a random place, 'normal'
    ones do not. For tests, benchmarks and demos of the DICOM path."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        for cls in ("lesion", "normal"):
            hu = 40 + 10 * rng.standard_normal((size, size))
            if cls == "lesion":
                cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
                hu[(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2] += 60
            write_ct_slice(root / cls / f"{cls}_{k:03d}.dcm", hu)
    return root
