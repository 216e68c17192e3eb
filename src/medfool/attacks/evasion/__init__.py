"""White-box evasion attacks; importing this package registers them."""

from medfool.attacks.evasion import apgd, cw, deepfool, fgsm, pgd  # noqa: F401
