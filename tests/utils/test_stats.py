"""Per-class, balanced and interval figures for an accuracy on a sample."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medfool.utils.stats import accuracy_breakdown, balanced_interval, wilson


def test_wilson_matches_the_textbook_value() -> None:
    # 8 of 10: Wilson 95 % interval (0.4902, 0.9433) (Newcombe 1998, table I style)
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson(0, 0))


@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_holds_the_point_estimate(k: int, n: int) -> None:
    k = min(k, n)
    lo, hi = wilson(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_a_constant_answer_is_exposed() -> None:
    # 59 % pneumonia: always answering pneumonia keeps 59 % accuracy and 50 % balanced
    labels = [1] * 59 + [0] * 41
    correct = [1] * 59 + [0] * 41
    b = accuracy_breakdown(correct, labels, ("normal", "pneumonia"))
    assert b["accuracy"] == pytest.approx(0.59)
    assert b["constant"] == pytest.approx(0.59) and b["majority"] == "pneumonia"
    assert b["above_constant"] == pytest.approx(0.0)
    assert b["balanced"] == pytest.approx(0.5)
    assert b["sensitivity"] == 1.0 and b["specificity"] == 0.0
    assert b["per_class"]["normal"]["n"] == 41 and b["per_class"]["normal"]["accuracy"] == 0.0


def test_balanced_interval_is_wider_for_small_classes() -> None:
    lo1, hi1 = balanced_interval([(45, 50), (45, 50)])
    lo2, hi2 = balanced_interval([(90, 100), (9, 10)])
    assert lo1 < 0.9 < hi1 and hi2 - lo2 > hi1 - lo1


def test_multilabel_gets_the_overall_figure_only() -> None:
    b = accuracy_breakdown([True, False], None, ("a", "b", "c"))
    assert b["accuracy"] == 0.5 and "per_class" not in b


def test_labels_must_match() -> None:
    with pytest.raises(ValueError, match="one entry per image"):
        accuracy_breakdown([True], [0, 1], ("a", "b"))
