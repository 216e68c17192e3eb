"""Black-box attacks: they only query the model's outputs; importing this package registers them."""

from medfool.attacks.blackbox import boundary, hsj, noise, simba, square  # noqa: F401
