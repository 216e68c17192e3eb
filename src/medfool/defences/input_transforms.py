"""Input-transform defences applied to a trained model (the layers live in
:mod:`medfool.models.preprocess`, so a defended model saves and loads as a plain checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from medfool.models.classifier import Classifier

__all__ = ["with_transforms"]


def with_transforms(model: Classifier, specs: Sequence[Mapping[str, Any]]) -> Classifier:
    """The same network and weights behind ``specs`` (after any transforms it already has)."""
    meta = replace(model.meta, preprocess=(*model.meta.preprocess, *(dict(s) for s in specs)))
    defended = Classifier(model.network, meta)
    defended.load_state_dict(model.state_dict(), strict=False)
    return defended.to(model.device).eval()
