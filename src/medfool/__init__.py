"""medfool: red-team medical image classifiers.

Pixel space everywhere is float32 NCHW in [0, 1]; normalisation lives inside
:class:`medfool.models.Classifier`, so an epsilon means the same thing for every model.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medfool")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
