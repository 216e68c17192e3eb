"""White-box evasion attacks; importing this package registers them."""

from medfool.attacks.evasion import apgd, cw, deepfool, fgsm, jsma, pgd, uap  # noqa: F401
