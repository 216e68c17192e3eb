"""White-box evasion attacks; importing this package registers them."""

from medfool.attacks.evasion import apgd, cw, deepfool, eot, fab, fgsm, jsma, pgd, stain, uap  # noqa: F401
