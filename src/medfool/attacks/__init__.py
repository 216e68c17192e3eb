"""Attacks: one interface (``Attack``, ``AttackResult``) and a registry of every method."""

from medfool.attacks import blackbox, ensemble, evasion, fewpixel, patch  # noqa: F401  (registers the attacks)
from medfool.attacks.base import (
    Attack,
    AttackConfig,
    AttackResult,
    attack_class,
    attack_names,
    get_attack,
    register_attack,
)

__all__ = ["Attack", "AttackConfig", "AttackResult", "attack_class", "attack_names", "get_attack", "register_attack"]
