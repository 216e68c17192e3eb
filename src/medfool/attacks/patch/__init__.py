"""Adversarial patches: placement and pasting, the optimised universal patch, natural patches."""

from medfool.attacks.patch import optimised  # noqa: F401  (registers the patch attack)
from medfool.attacks.patch.placement import Placement, paste, patch_side, sample_placements

__all__ = ["Placement", "paste", "patch_side", "sample_placements"]
