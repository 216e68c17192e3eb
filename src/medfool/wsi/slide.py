"""One interface over slide readers: levels, regions, properties, thumbnails.

tiffslide (pure Python, over tifffile) reads pyramidal TIFF, SVS and the other formats it knows
and is the default; OpenSlide (``backend="openslide"``, the ``openslide-python`` package and its
C library) is optional. Coordinates follow OpenSlide's convention: ``location`` is (x, y) in
level-0 pixels, ``size`` is (width, height) at the level read. A file that is not a slide, or is
cut short, is a :class:`medfool.errors.DataError` with one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from medfool.errors import ConfigError, DataError

__all__ = ["Backend", "Slide", "open_slide"]

Backend = Literal["tiffslide", "openslide"]


class _Reader(Protocol):  # what tiffslide.TiffSlide and openslide.OpenSlide share
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: object

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> object: ...

    def close(self) -> None: ...


@dataclass
class Slide:
    """An open slide. Use as a context manager, or call :meth:`close`."""

    path: Path
    reader: _Reader
    backend: Backend

    @property
    def level_count(self) -> int:
        return int(self.reader.level_count)

    @property
    def dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every level, level 0 first."""
        return tuple((int(w), int(h)) for w, h in self.reader.level_dimensions)

    @property
    def downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self.reader.level_downsamples)

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel, where the file says."""
        props = dict(self.reader.properties)  # type: ignore[call-overload]
        for key in ("tiffslide.mpp-x", "openslide.mpp-x"):
            if props.get(key) not in (None, ""):
                return float(props[key])
        return None

    def read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """(height, width, 3) uint8 RGB of the region; pixels outside the slide are white."""
        if not 0 <= level < self.level_count:
            raise ConfigError(f"{self.path}: level {level} does not exist (levels 0 to {self.level_count - 1})")
        try:
            region = np.asarray(self.reader.read_region((int(location[0]), int(location[1])), level,
                                                        (int(size[0]), int(size[1]))))
        except Exception as exc:  # noqa: BLE001  (readers raise their own kinds on damaged tiles)
            raise DataError(f"{self.path}: cannot read level {level} at {tuple(location)} ({_first_line(exc)})") \
                from None
        if region.ndim == 3 and region.shape[2] == 4:  # RGBA (OpenSlide): transparent is outside the slide
            alpha = region[..., 3:4].astype(np.float32) / 255
            region = (region[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
        return np.ascontiguousarray(region[..., :3])

    def level_image(self, level: int) -> np.ndarray:
        """The whole of one level, (height, width, 3) uint8."""
        w, h = self.dimensions[level]
        return self.read((0, 0), level, (w, h))

    def thumbnail_level(self, max_side: int = 2048) -> int:
        """The most detailed level whose longer side is at most ``max_side`` (else the smallest)."""
        for level, (w, h) in enumerate(self.dimensions):
            if max(w, h) <= max_side:
                return level
        return self.level_count - 1

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:160] if text else type(exc).__name__) or type(exc).__name__


def open_slide(path: str | Path, backend: Backend = "tiffslide") -> Slide:
    """Open ``path`` with ``backend``; its first tile is read at once, so a damaged file fails here."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such slide file")
    if backend == "openslide":
        try:
            import openslide  # type: ignore[import-not-found]
        except ImportError:
            raise ConfigError("the openslide backend needs openslide-python and the OpenSlide library") from None
        opener = openslide.OpenSlide
    elif backend == "tiffslide":
        try:
            import tiffslide  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigError("whole slides need the wsi extra: pip install 'medfool[wsi]'") from None
        opener = tiffslide.TiffSlide
    else:
        raise ConfigError(f"unknown slide backend {backend!r} (tiffslide, openslide)")
    try:
        reader = opener(str(p))
    except Exception as exc:  # noqa: BLE001  (tifffile and OpenSlide raise many kinds on a bad file)
        raise DataError(f"{p}: not a readable slide ({_first_line(exc)})") from None
    slide = Slide(p, reader, backend)
    try:
        w, h = slide.dimensions[-1]
        slide.read((0, 0), slide.level_count - 1, (min(w, 64), min(h, 64)))
        w0, h0 = slide.dimensions[0]
        slide.read((max(0, w0 - 64), max(0, h0 - 64)), 0, (min(w0, 64), min(h0, 64)))  # the last tile too
    except DataError:
        slide.close()
        raise
    return slide
