"""The audit report's robust accuracy, broken down: per class, balanced, 95 % intervals, the
constant-classifier line and, for two classes, robust sensitivity and specificity; the headline
figure chosen by how imbalanced the sample is. Synthetic stores with known answers."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from medfool.eval.store import ResultStore
from medfool.report import summary as S
from medfool.report.html import INLINE_CLASSES, breakdown_table, breakdown_tables, render
from medfool.utils.stats import IMBALANCE_MARGIN, accuracy_breakdown, is_imbalanced, wilson

BINARY = ("normal", "pneumonia")


def _rows(attack: str, budget: str, kept: dict[int, tuple[int, int]], stage: str = "whitebox") -> list[dict[str, Any]]:
    """Rows of one attack at one budget: per class, (images, images still correct after it);
    every image was correct before, so the others were fooled."""
    out, image = [], 0
    for label, (n, still) in kept.items():
        for j in range(n):
            out.append({"stage": stage, "attack": attack, "budget": budget, "image": image, "label": label,
                        "clean_pred": label, "adv_pred": label if j < still else 1 - label, "clean_correct": 1,
                        "success": int(j >= still), "l0": 10.0, "l2": 0.5, "linf": 4 / 255, "psnr": 40.0,
                        "ssim": 0.99, "ciede2000": 1.0, "queries": 20, "gradients": 20, "time_s": 0.01})
            image += 1
    return out


# 59 pneumonia, 41 normal (the PneumoniaMNIST sample of the issue); the worst case at 8/255 answers
# "pneumonia" for everything: 59 % accuracy, 50 % balanced, sensitivity 100 %, specificity 0 %
IMBALANCED = (_rows("ensemble", "4/255", {0: (41, 30), 1: (59, 50)})
              + _rows("ensemble", "8/255", {0: (41, 0), 1: (59, 59)})
              + _rows("fgsm", "8/255", {0: (41, 20), 1: (59, 40)}))
BALANCED = (_rows("ensemble", "4/255", {0: (50, 40), 1: (50, 30)})
            + _rows("ensemble", "8/255", {0: (50, 20), 1: (50, 25)}))


def _meta(classes: tuple[str, ...] = BINARY, critical: tuple[int, ...] = (1,)) -> dict[str, Any]:
    return {"classes": list(classes), "critical": list(critical), "task": "binary" if len(classes) == 2 else
            "multi-class", "dataset": "toy", "image_shape": [1, 8, 8], "config": {"whitebox": {"ensemble": "fast"}}}


def test_summaries_carry_the_breakdown_of_their_rows():
    summaries = S.summarise(IMBALANCED, classes=BINARY, critical=(1,))
    at8 = next(s for s in summaries if (s["attack"], s["budget"]) == ("ensemble", "8/255"))
    b = at8["robust_breakdown"]
    assert b["accuracy"] == pytest.approx(0.59) == at8["robust_accuracy"]
    assert b["balanced"] == pytest.approx(0.5)
    assert b["per_class"]["normal"]["accuracy"] == 0.0 and b["per_class"]["pneumonia"]["accuracy"] == 1.0
    assert b["positive"] == "pneumonia" and b["sensitivity"] == 1.0 and b["specificity"] == 0.0
    assert b["constant"] == pytest.approx(0.59) and b["majority"] == "pneumonia"
    at4 = next(s for s in summaries if (s["attack"], s["budget"]) == ("ensemble", "4/255"))["robust_breakdown"]
    assert at4["balanced"] == pytest.approx((30 / 41 + 50 / 59) / 2)
    assert at4["ci95"] == pytest.approx(list(wilson(80, 100)))
    # the model's one critical class is the positive one, whatever its index
    flipped = S.summarise(IMBALANCED, classes=BINARY, critical=(0,))
    b0 = next(s for s in flipped if (s["attack"], s["budget"]) == ("ensemble", "8/255"))["robust_breakdown"]
    assert b0["positive"] == "normal" and b0["sensitivity"] == 0.0 and b0["specificity"] == 1.0
    # multi-label rows (no single label) get the overall figure and interval only
    ml = [{**r, "label": None} for r in IMBALANCED]
    bml = S.summarise(ml, classes=("a", "b", "c"))[0]["robust_breakdown"]
    assert "per_class" not in bml and bml["accuracy"] == pytest.approx(0.8)


def test_imbalance_is_the_majority_share_above_one_over_k_plus_the_margin():
    assert IMBALANCE_MARGIN == 0.05
    b59 = accuracy_breakdown([1] * 100, [1] * 59 + [0] * 41, BINARY)
    b55 = accuracy_breakdown([1] * 100, [1] * 55 + [0] * 45, BINARY)
    assert is_imbalanced(b59, 2) and not is_imbalanced(b55, 2)
    b3 = accuracy_breakdown([1] * 100, [0] * 39 + [1] * 31 + [2] * 30, ("a", "b", "c"))
    assert is_imbalanced(b3, 3) and not is_imbalanced(accuracy_breakdown([1] * 90, [0, 1, 2] * 30, "abc"), 3)
    assert not is_imbalanced(accuracy_breakdown([1, 0], None, "abc"), 3)  # multi-label: no class shares


def _headline(found: list[str]) -> str:
    return next(f for f in found if f.startswith("Against the strongest attacker"))


def test_headline_is_the_balanced_figure_on_an_imbalanced_sample():
    summaries = S.summarise(IMBALANCED, classes=BINARY, critical=(1,))
    found = S.findings(_meta(), None, summaries, IMBALANCED, [], [])
    head = _headline(found)
    at8 = next(s for s in summaries if s["attack"] == "ensemble" and s["budget"] == "8/255")["robust_breakdown"]
    lo, hi = at8["balanced_ci95"]
    assert "balanced robust accuracy is 79 % (95 % CI" in head  # (30/41 + 50/59) / 2 at 4/255
    assert f"and 50 % (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %) at 8/255" in head
    assert "the sample is 59 % pneumonia" in head  # why the plain figure is not the headline
    assert "balanced FGSM 58 % at 8/255" in head  # the naive attacker's figure is balanced too
    detail = next(f for f in found if f.startswith("At 8/255 the worst case"))
    assert "robust sensitivity (pneumonia) 100 %" in detail and "robust specificity 0 %" in detail
    assert "a constant 'pneumonia' answer would keep 59 % (balanced 50 %)" in detail


def test_headline_is_the_accuracy_with_its_interval_on_a_balanced_sample():
    summaries = S.summarise(BALANCED, classes=BINARY, critical=(1,))
    head = _headline(S.findings(_meta(), None, summaries, BALANCED, [], []))
    lo, hi = wilson(45, 100)
    assert "robust accuracy is 70 % (95 % CI" in head and "balanced" not in head
    assert f"45 % (95 % CI {100 * lo:.0f}-{100 * hi:.0f} %) at 8/255" in head


def test_three_classes_name_the_weakest_and_the_strongest_class():
    rows = (_rows("ensemble", "8/255", {0: (10, 1), 1: (6, 3)}) + [
        {**r, "label": 2, "image": 100 + r["image"]} for r in _rows("ensemble", "8/255", {0: (4, 4)})])
    summaries = S.summarise(rows, classes=("a", "b", "c"), critical=(2,))
    found = S.findings(_meta(("a", "b", "c"), (2,)), None, summaries, rows, [], [])
    detail = next(f for f in found if f.startswith("At 8/255 the worst case"))
    assert detail == ("At 8/255 the worst case leaves its weakest class, a, at 10 % (1 of 10) and its strongest, c, at "
                      "100 % (4 of 4); a constant 'a' answer would keep 50 % (balanced 33 %).")
    flat = S.summarise(_rows("ensemble", "8/255", {0: (4, 0), 1: (4, 0)}), classes=("a", "b", "c"))
    assert "leaves every class at 0 %;" in S.breakdown_finding(flat[0])


class _Tables(HTMLParser):
    """Every table of a page as rows of cell texts; a cell's interval line (after <br>) is kept
    after a ' | '."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "br" and self.cell is not None:
            self.cell.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def _tables(text: str) -> list[list[list[str]]]:
    p = _Tables()
    p.feed(text)
    return p.tables


def test_breakdown_table_shows_every_figure_of_a_breakdown():
    b = accuracy_breakdown([1] * 59 + [0] * 41, [1] * 59 + [0] * 41, BINARY)
    (table,) = _tables(breakdown_table([(["ensemble", "8/255"], b)], head=["attack", "budget"]))
    head, row = table
    cells = dict(zip(head, row, strict=True))
    lo, hi = wilson(59, 100)
    assert cells["attack"] == "ensemble" and cells["budget"] == "8/255"
    assert cells["accuracy"] == f"59.0 % | {100 * lo:.0f}–{100 * hi:.0f}"
    blo, bhi = b["balanced_ci95"]
    assert cells["balanced"] == f"50.0 % | {100 * blo:.0f}–{100 * bhi:.0f}"
    # two classes: the positive class's recall is the sensitivity, the other's the specificity
    assert cells["pneumonia (sensitivity)"] == f"100.0 % | 59/59, {100 * wilson(59, 59)[0]:.0f}–100"
    assert cells["normal (specificity)"] == f"0.0 % | 0/41, 0–{100 * wilson(0, 41)[1]:.0f}"
    assert cells["constant answer"] == "59.0 % | pneumonia"
    # three classes: no sensitivity, a column per class
    b3 = accuracy_breakdown([1, 0, 1, 1], [0, 0, 1, 2], ("a", "b", "c"))
    (t3,) = _tables(breakdown_table([(["x"], b3)], head=["row"]))
    assert t3[0] == ["row", "accuracy", "balanced", "a", "b", "c", "constant answer"]
    assert t3[1][3].startswith("50.0 % | 1/2, ")


def test_many_classes_are_split_over_tables_that_fit():
    """Nine classes: the overall figures in one table, the per-class ones in two of five and four
    classes, each row led by the same cells; up to INLINE_CLASSES classes, one table."""
    names = tuple(f"class {k}" for k in range(9))
    labels = [k for k in range(9) for _ in range(k + 1)]  # class k has k + 1 images, all but one kept
    b = accuracy_breakdown([j > 0 for k in range(9) for j in range(k + 1)], labels, names)
    tables = _tables(breakdown_tables([(["pgd", "8/255"], b)], ["attack", "budget"]))
    assert [t[0] for t in tables] == [["attack", "budget", "accuracy", "balanced", "constant answer"],
                                      ["attack", "budget", *names[:5]], ["attack", "budget", *names[5:]]]
    assert all(t[1][:2] == ["pgd", "8/255"] for t in tables)
    assert tables[0][1][4] == "20.0 % | class 8"  # 9 of 45 images
    assert tables[2][1][2].startswith("83.3 % | 5/6, ")  # class 5: 5 of its 6 images kept
    few = accuracy_breakdown([1, 0, 1, 1], [0, 1, 2, 3], names[:INLINE_CLASSES])
    assert len(_tables(breakdown_tables([(["x"], few)], ["row"]))) == 1


def _store(path: Path, rows: list[dict[str, Any]], classes: tuple[str, ...], critical: tuple[int, ...]) -> Path:
    with ResultStore.open(path / "audit.sqlite") as store:
        for key, value in {**_meta(classes, critical), "seed": 0, "environment": {"medfool": "x", "torch": "y"},
                           "model": "m.safetensors", "images": list(range(100))}.items():
            store.set_meta(key, value)
        store.commit_unit("u", rows)
    return path


def test_report_shows_the_breakdown_wherever_it_shows_a_robust_accuracy(tmp_path: Path):
    _store(tmp_path, IMBALANCED, BINARY, (1,))
    with ResultStore.open(tmp_path / "audit.sqlite", readonly=True) as store:
        render(store, tmp_path)
    page = (tmp_path / "report.html").read_text()
    tables = _tables(page)
    robust = next(t for t in tables if "balanced" in t[0] and "constant answer" in t[0])
    head = robust[0]
    row = next(r for r in robust[1:] if "ensemble (worst case)" in r and "8/255" in r)
    cells = dict(zip(head, row, strict=True))
    assert cells["robust accuracy"].startswith("59.0 % | ") and cells["balanced"].startswith("50.0 % | ")
    assert cells["pneumonia (sensitivity)"].startswith("100.0 % | 59/59")
    assert cells["normal (specificity)"].startswith("0.0 % | 0/41")
    assert cells["constant answer"] == "59.0 % | pneumonia"
    fgsm = dict(zip(head, next(r for r in robust[1:] if "fgsm (naive)" in r), strict=True))
    assert fgsm["balanced"].startswith(f"{100 * (20 / 41 + 40 / 59) / 2:.1f} %")
    # the headline in the page is the balanced figure
    assert "balanced robust accuracy is 79 % (95 % CI" in page
