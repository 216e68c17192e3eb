"""medfool: red-team medical image classifiers.

Pixel space everywhere is float32 NCHW in [0, 1]; normalisation lives inside
:class:`medfool.models.Classifier`, so an epsilon means the same thing for every model.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# MKL otherwise picks its thread count per call from the machine's load, and a GEMM split over
# another number of threads rounds differently: the same run would give other last bits on a
# busy machine. Read when MKL starts, so it takes effect unless torch did BLAS work before.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

try:
    __version__ = version("medfool")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__", "wrap"]


def __getattr__(name: str) -> object:
    """``medfool.wrap`` without importing torch on ``import medfool``."""
    if name == "wrap":
        from medfool.models.wrap import wrap

        return wrap
    raise AttributeError(f"module 'medfool' has no attribute {name!r}")
