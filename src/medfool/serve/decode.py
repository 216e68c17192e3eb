"""Request images to model input: PNG (8-bit grayscale or RGB), NPY (float in [0, 1], C x H x W
or N x C x H x W, never unpickled) or DICOM (through its modality LUT and a window: the server's,
else the file's own), checked against the model's input shape. Anything else is a
:class:`BadImage` (HTTP 422) with one line saying what was wrong."""

from __future__ import annotations

import io

import numpy as np
import torch

from medfool.data.windowing import Window

__all__ = ["BadImage", "decode_image", "from_array"]


class BadImage(ValueError):
    """The request's image cannot be read as the model's input."""


def from_array(arr: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, C, H, W) float32 in [0, 1] from a C x H x W or N x C x H x W array of that shape."""
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(shape):
        raise BadImage(f"expected an array of shape {list(shape)} (or N x {list(shape)}), got {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.number):
        raise BadImage(f"expected numbers, got dtype {arr.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise BadImage("pixel values must be finite and in [0, 1]")
    return x


def _dicom(data: bytes, shape: tuple[int, int, int], window: Window | None) -> torch.Tensor:
    import tempfile
    from pathlib import Path

    from medfool.data.dicom import read_dicom, stored_size
    from medfool.errors import DataError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.dcm"
        path.write_bytes(data)
        try:
            rows, cols = stored_size(path)  # from the header: nothing decoded yet
            if (rows, cols) != tuple(shape[1:]):
                raise BadImage(f"DICOM: the image is {rows} x {cols}; the model takes {shape[1]} x {shape[2]}")
            image = read_dicom(path)
        except DataError as exc:
            raise BadImage(str(exc).replace(f"{path}: ", "DICOM: ")) from None
    use = window or image.file_window
    if use is None and not image.colour:
        raise BadImage("DICOM: the file states no window (Window Center / Width) and the range serves none "
                       "(--window CENTRE,WIDTH)")
    arr = image.pixels(use or Window(0.5, 1.0)).transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return from_array(np.ascontiguousarray(arr), shape)


def decode_image(data: bytes, shape: tuple[int, int, int], window: Window | None = None) -> torch.Tensor:
    """The image in ``data`` (PNG, NPY or DICOM, told apart by their magic bytes) as model input;
    ``window`` maps a greyscale DICOM's native units to [0, 1] (None: the file's own)."""
    if len(data) > 132 and data[128:132] == b"DICM":
        return _dicom(data, shape, window)
    if data.startswith(b"\x93NUMPY"):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise BadImage(f"not a readable NPY array ({exc})") from None
        return from_array(arr, shape)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        from PIL import Image, UnidentifiedImageError

        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise BadImage(f"not a readable PNG ({exc})") from None
        c = shape[0]
        if img.mode not in ("L", "RGB"):
            raise BadImage(f"expected an 8-bit grayscale or RGB PNG, got mode {img.mode}")
        if (img.mode == "L") != (c == 1):
            raise BadImage(f"the model takes {c} channel{'s' if c != 1 else ''}; the PNG is {img.mode}")
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return from_array(arr, shape)
    raise BadImage("expected a PNG, NPY or DICOM image")
