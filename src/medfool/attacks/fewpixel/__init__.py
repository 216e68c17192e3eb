"""Few-pixel attacks: differential evolution over k (location, colour) pixels, and the analyses
of where single pixels matter."""

from medfool.attacks.fewpixel import onepixel  # noqa: F401  (registers the one-pixel attack)
