"""The window that maps an image's native values (Hounsfield units, grey levels) to the [0, 1]
attack space, shared by the DICOM and NIfTI readers.

One dataset has one linear window, so a budget in [0, 1] units has one size in native units
(``Window.native``: 8/255 of a 400 HU window is 12.5 HU) and an image maps back to native
values exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medfool.errors import DataError

__all__ = ["NativeImage", "NativeOptions", "Window", "choose_window"]


@dataclass(frozen=True)
class Window:
    """[0, 1] pixels map linearly to [centre - width / 2, centre + width / 2] in ``unit``."""

    centre: float
    width: float
    unit: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.centre) and math.isfinite(self.width)) or self.width <= 0:
            raise DataError(f"a window needs a finite centre and a width > 0, got {self.centre}/{self.width}")

    @property
    def low(self) -> float:
        return self.centre - self.width / 2

    @property
    def high(self) -> float:
        return self.centre + self.width / 2

    def native(self, eps: float) -> float:
        """The size in native units of a budget ``eps`` in [0, 1] pixel units."""
        return eps * self.width

    @classmethod
    def parse(cls, text: str, unit: str = "") -> Window:
        """``"40,400"``: centre and width."""
        try:
            c, w = (float(v) for v in text.split(","))
        except ValueError:
            raise DataError(f"a window is CENTRE,WIDTH (e.g. 40,400 for soft tissue in HU), got {text!r}") from None
        return cls(c, w, unit)


@dataclass(frozen=True)
class NativeOptions:
    """How DICOM and NIfTI files become [0, 1] images: the window (None: the files' own, else
    the data's range) and the axis a NIfTI volume is sliced along."""

    window: Window | None = None
    slice_axis: int = 2


@dataclass(frozen=True)
class NativeImage:
    """One image before windowing: ``native`` (H, W) in native units for greyscale
    images, (H, W, 3) in [0, 1] for colour ones."""

    native: np.ndarray
    unit: str
    inverted: bool                # MONOCHROME1
    file_window: Window | None    # the file's own default view, if it states one

    @property
    def colour(self) -> bool:
        return self.native.ndim == 3

    def pixels(self, window: Window) -> np.ndarray:
        """(H, W, C) float32 in [0, 1] through ``window`` (colour images need none)."""
        if self.colour:
            return self.native.astype(np.float32)
        x = np.clip((self.native - window.low) / window.width, 0.0, 1.0)
        if self.inverted:
            x = 1.0 - x
        return x.astype(np.float32)[..., None]


def choose_window(stated: Window | None, file_windows: list[Window | None], unit: str,
                  data_range: Callable[[], tuple[float, float]]) -> tuple[Window, str]:
    """The one window a dataset's greyscale images share, and how it was chosen: the stated
    one, else the files' own when they all agree, else the range of every value in the data
    (``data_range`` is called only then: it reads every file)."""
    if stated is not None:
        return Window(stated.centre, stated.width, stated.unit or unit), "stated"
    own = set(file_windows)
    if len(own) == 1 and None not in own:
        (w,) = own
        assert w is not None
        return w, "from the files' Window Center / Width"
    lo, hi = data_range() if file_windows else (0.0, 1.0)
    why = ("the files state different windows" if len(own - {None}) > 1 else
           "not every file states a window" if len(own) > 1 else "the files state no window")
    return Window((lo + hi) / 2, max(hi - lo, 1e-6), unit), f"{why}: the range of all values in the data"

