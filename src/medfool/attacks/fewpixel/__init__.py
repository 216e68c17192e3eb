"""Few-pixel attacks: differential evolution over k (location, colour) pixels, and the analyses
of where single pixels matter."""

from medfool.attacks.fewpixel import onepixel, pareto  # noqa: F401  (registers the attacks)
