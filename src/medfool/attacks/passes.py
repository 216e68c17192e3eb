"""What an attack costs in model passes, known before it runs.

An audit at 224 px on a CPU can take hours; the user should learn that before the first unit,
and a progress bar whose units differ a thousandfold in cost cannot give an honest ETA. Every
attack states the most passes one image can cost at its configured budget (early stopping on
images it breaks only makes it cheaper); the audit multiplies them by measured milliseconds
per image.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Passes"]


@dataclass(frozen=True)
class Passes:
    """Model passes: ``gradients`` forward+backward passes to the input and ``forwards``
    forward-only passes, counted per image (or summed over images, once scaled)."""

    gradients: float = 0.0
    forwards: float = 0.0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.gradients + other.gradients, self.forwards + other.forwards)

    def __mul__(self, k: float) -> Passes:
        return Passes(self.gradients * k, self.forwards * k)

    __rmul__ = __mul__

    def seconds(self, forward_s: float, gradient_s: float) -> float:
        """Time at the measured seconds per image of a forward and of a forward+backward pass."""
        return self.gradients * gradient_s + self.forwards * forward_s
