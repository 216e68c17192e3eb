"""AUC against a brute-force pairwise count; accuracy per task."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medfool.models.metrics import binary_auc, classification_metrics


def _brute_auc(scores, pos):
    p = [s for s, y in zip(scores, pos, strict=True) if y]
    n = [s for s, y in zip(scores, pos, strict=True) if not y]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in p for b in n)
    return wins / (len(p) * len(n))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=60))
def test_auc_matches_pairwise_count(pairs):
    scores = [float(s) for s, _ in pairs]  # small integer range -> many ties
    pos = [y for _, y in pairs]
    got = binary_auc(torch.tensor(scores), torch.tensor(pos))
    if all(pos) or not any(pos):
        assert math.isnan(got)
    else:
        assert abs(got - _brute_auc(scores, pos)) < 1e-12


def test_multiclass_metrics():
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    labels = torch.tensor([0, 1, 2, 1])
    m = classification_metrics(logits, labels, "multi-class")
    assert m["accuracy"] == 0.75 and m["accuracy_per_class"] == [1.0, 0.5, 1.0]
    assert np.isclose(m["auc"], np.mean(m["auc_per_class"]))
