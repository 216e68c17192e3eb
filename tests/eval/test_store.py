"""The results store: a unit's rows land all together or not at all."""

from __future__ import annotations

import sqlite3

import pytest

from medfool.errors import ConfigError
from medfool.eval.store import ResultStore, unit_seed


def _row(image, **kw):
    return {"stage": "whitebox", "attack": "pgd", "budget": "8/255", "image": image, "label": 0, "clean_pred": 0,
            "adv_pred": 1, "clean_correct": 1, "success": 1, "l0": 3.0, "l2": 0.5, "linf": 0.03, "queries": 4,
            "gradients": 3, "time_s": 0.1, **kw}


def test_commit_and_read_back(tmp_path):
    with ResultStore.open(tmp_path / "s.sqlite") as store:
        store.set_meta("config", {"n": 2})
        store.commit_unit("u0", [_row(0), _row(1, success=0)], [("a", "json", b"{}")])
    with ResultStore.open(tmp_path / "s.sqlite") as store:
        assert store.get_meta("config") == {"n": 2}
        assert store.done_units() == {"u0"}
        rows = store.rows()
        assert [r["image"] for r in rows] == [0, 1] and rows[1]["success"] == 0 and rows[0]["l2"] == 0.5
        assert store.artifact("a") == ("json", b"{}")
        assert store.artifact("missing") is None


def test_failed_unit_leaves_nothing(tmp_path):
    with ResultStore.open(tmp_path / "s.sqlite") as store:
        store.commit_unit("u0", [_row(0)])
        with pytest.raises(sqlite3.IntegrityError):  # image 0 again: a duplicated row is refused ...
            store.commit_unit("u1", [_row(5), _row(0)], [("art", "png", b"x")])
        # ... and takes the rest of its unit with it
        assert store.done_units() == {"u0"}
        assert [r["image"] for r in store.rows()] == [0]
        assert store.artifact("art") is None
        with pytest.raises(sqlite3.IntegrityError):  # a unit is committed once
            store.commit_unit("u0", [])


def test_prune_drops_units_no_longer_planned(tmp_path):
    with ResultStore.open(tmp_path / "s.sqlite") as store:
        store.commit_unit("keep", [_row(0)], [("a", "png", b"1")])
        store.commit_unit("old", [_row(1)], [("b", "png", b"2")])
        assert store.prune({"keep", "not-run-yet"}) == 1
        assert store.done_units() == {"keep"}
        assert [r["image"] for r in store.rows()] == [0] and store.artifact("b") is None


def test_unreadable_store_is_a_user_error(tmp_path):
    bad = tmp_path / "audit.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigError, match="not a readable results store"):
        ResultStore.open(bad)
    with pytest.raises(ConfigError, match="no results store here"):
        ResultStore.open(tmp_path / "none.sqlite", create=False)


def test_unit_seeds_are_stable_and_distinct():
    assert unit_seed(0, "whitebox/pgd/8/0") == unit_seed(0, "whitebox/pgd/8/0")
    assert len({unit_seed(s, u) for s in (0, 1) for u in ("a", "b", "c")}) == 6
