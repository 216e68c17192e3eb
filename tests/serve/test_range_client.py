"""The attacker's side of the range: query-only attacks take a URL as the model, reach what they
reach in process, and the server's log accounts for every query they report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medfool.attacks import get_attack
from medfool.data import make_synthetic
from medfool.defences.stateful import Blacklight
from medfool.errors import ConfigError
from medfool.models import load_classifier
from medfool.models.predict import from_classifier
from medfool.models.remote import KeysSpent, connect
from medfool.serve.limits import Limits


def load_classifier_tiny():
    from medfool.data import make_synthetic as synth
    from medfool.models.train import TrainConfig, fit

    return fit(synth(seed=0), TrainConfig(arch_kwargs={"width": 4}, epochs=1, seed=0)).model


def _images(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    split = make_synthetic(seed=0).split("test")
    return split.get(list(range(n)))


@pytest.mark.parametrize(("name", "options", "labels"), [
    ("square", {"eps": 16 / 255, "queries": 60}, False),
    ("hsj", {"queries": 80}, True),
])
def test_over_http_as_in_process_and_every_query_logged(name: str, options: dict[str, float], labels: bool,
                                                       tiny_model: Path, serve_range) -> None:
    x, y = _images()
    model, _ = load_classifier(str(tiny_model))
    attack = get_attack(name, **options)
    local = attack(from_classifier(model, "labels" if labels else "probs"), x, y, seed=3)
    with serve_range(tiny_model) as served:
        remote, client = connect(served.url, served.keys, output="labels" if labels else "probs", run="t1", batch=16)
        over = attack(remote, x, y, seed=3)
        client.close()
        assert torch.equal(over.success, local.success)
        assert torch.equal(over.queries, local.queries)
        assert torch.allclose(over.x_adv, local.x_adv, atol=1e-6)
        assert int(local.success.sum()) > 0  # the comparison means something: some images fooled
        # the log: every query the attack reported, no more, no fewer
        assert served.log.count() == int(over.queries.sum()) == client.stats.queries
        assert {r.run for r in served.log.rows()} == {"t1"}
        assert int(over.extras["refused"].sum()) == 0


def test_refused_queries_are_counted_and_never_a_success(tiny_model: Path, serve_range) -> None:
    x, y = _images()
    attack = get_attack("square", eps=16 / 255, queries=60)
    with serve_range(tiny_model, detector=Blacklight()) as served:
        remote, client = connect(served.url, served.keys, run="bl")
        r = attack(remote, x, y, seed=3)
        client.close()
        rows = served.log.rows()
    refused = sum(row.verdict == "reject" for row in rows)
    assert refused > 0 and refused == int(r.extras["refused"].sum()) == client.stats.refused
    assert len(rows) == int(r.queries.sum())
    assert all(row.answer == "null" for row in rows if row.verdict == "reject")
    # a success comes from an answer: the model itself gets every "fooled" image wrong
    model, _ = load_classifier(str(tiny_model))
    with torch.no_grad():
        wrong = model(r.x_adv).argmax(1) != y
    assert bool((wrong | ~r.success).all())


def test_refused_rows_read_as_the_clean_answer_never_a_success() -> None:
    """A model that refuses every query after the first: Square gets no answer it could call a
    success, whatever it sends; the do-nothing reading (NaN as an answer) would count some."""
    from medfool.models.predict import PredictModel

    x, y = _images()
    model, calls = from_classifier(load_classifier_tiny()), [0]

    def predict(q: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        out = model.predict(q).clone()
        if calls[0] > 1:
            out[:] = float("nan")
        return out

    refusing = PredictModel(predict, model.meta, "probs", may_refuse=True)
    r = get_attack("square", eps=0.5, queries=30)(refusing, x, y, seed=0)
    assert bool(r.clean_correct.any()) and not bool((r.success & r.clean_correct).any())
    assert int(r.extras["refused"].sum()) == int((r.queries - 1).sum()) > 0


def test_flag_mode_answers_and_only_the_log_knows(tiny_model: Path, serve_range) -> None:
    x, y = _images(3)
    with serve_range(tiny_model, detector=Blacklight(), on_detect="flag") as served:
        remote, client = connect(served.url, served.keys)
        r = get_attack("square", eps=16 / 255, queries=40)(remote, x, y, seed=1)
        client.close()
        verdicts = [row.verdict for row in served.log.rows()]
    assert "flag" in verdicts and "reject" not in verdicts
    assert int(r.extras["refused"].sum()) == 0


def test_sybil_spreads_queries_and_spent_keys_end_cleanly(tiny_model: Path, serve_range) -> None:
    x, _ = _images(4)
    with serve_range(tiny_model, n_keys=3, limits=Limits(1e6, 10**6, 10)) as served:
        remote, client = connect(served.url, served.keys, batch=2)
        remote.predict(x[:4])
        remote.predict(x[:4])
        remote.predict(x[:4])
        assert sorted(client.stats.per_key.values()) == [4, 4, 4]  # in turn: 2 requests of 2 per key
        remote.predict(x[:4])  # the first keys' budgets (10 a day) are spent as it goes
        with pytest.raises(KeysSpent, match="every API key is over its daily budget"):
            for _ in range(10):
                remote.predict(x[:4])
        client.close()
        assert served.log.count() == client.stats.answered == 30


def test_short_429_is_waited_out(tiny_model: Path, serve_range) -> None:
    x, _ = _images(2)
    with serve_range(tiny_model, limits=Limits(rate=2.0, burst=2, daily=0)) as served:
        remote, client = connect(served.url, served.keys, batch=2)
        for _ in range(3):
            remote.predict(x)
        client.close()
    assert client.stats.rate_limited >= 1 and client.stats.waited_s >= 1
    assert client.stats.answered == 6


def test_a_batch_larger_than_the_burst_is_refused_and_the_client_keeps_under_it(tiny_model: Path,
                                                                               serve_range) -> None:
    import httpx

    x, _ = _images(5)
    with serve_range(tiny_model, limits=Limits(rate=1e6, burst=2, daily=0)) as served:
        body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [3, 3, 28, 28],
                            "data": x[:3].flatten().tolist()}]}
        r = httpx.post(f"{served.url}/v2/models/medfool/infer", json=body, headers={"X-API-Key": served.keys[0]})
        assert r.status_code == 413 and "at most 2" in r.json()["error"]
        remote, client = connect(served.url, served.keys, batch=64)
        assert remote.predict(x).shape == (5, 3) and client.batch == 2 and client.stats.requests == 3 + 1
        client.close()


def test_a_bad_key_or_url_says_so(tiny_model: Path, serve_range) -> None:
    with serve_range(tiny_model) as served:
        with pytest.raises(ConfigError, match="no credentials in the URL"):
            connect(served.url.replace("http://", "http://user:pw@"), served.keys)
        with pytest.raises(ConfigError, match="HTTP 403"):
            connect(served.url, ["mf_00000000_wrong"])
        with pytest.raises(ConfigError, match="an API key is needed"):
            connect(served.url, [])


def test_attack_cli_on_a_url_refuses_what_a_url_cannot_give(fails_cleanly, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"
    fails_cleanly(["attack", "pgd", "-m", url, "-d", "synthetic", "--out", str(tmp_path / "o")],
                  "a served model answers queries only", out=tmp_path / "o")
    fails_cleanly(["attack", "square", "-m", url, "-d", "synthetic", "--workers", "2", "--out", str(tmp_path / "o")],
                  "drop --workers", out=tmp_path / "o")


def test_range_report_refuses_bad_input_in_one_line(fails_cleanly, tmp_path: Path) -> None:
    fails_cleanly(["range", "report", str(tmp_path)], "no query log here")
    (tmp_path / "notalog.sqlite").write_text("hello")
    fails_cleanly(["range", "report", str(tmp_path / "notalog.sqlite")], "not a query log")
    from medfool.serve.querylog import QueryLog

    QueryLog(tmp_path / "queries.sqlite").close()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"attack": "pgd"}')
    fails_cleanly(["range", "report", str(tmp_path), "--runs", str(tmp_path / "run")],
                  "not an attack run against a served model")
    (tmp_path / "run" / "results.json").write_text("{oops")
    fails_cleanly(["range", "report", str(tmp_path), "--runs", str(tmp_path / "run")], r"results\.json: not JSON")


TASK_FIXTURES = {"multi-class": "multiclass", "binary-two-logits": "binary_two_logit",
                 "binary-one-logit": "binary_one_logit", "multi-label": "multilabel"}


@pytest.mark.parametrize("task", ["multi-class", "binary-two-logits", "binary-one-logit", "multi-label"])
def test_every_task_type_over_http_as_in_process(task: str, serve_range, request: pytest.FixtureRequest) -> None:
    model, x, y = request.getfixturevalue(TASK_FIXTURES[task])  # tests/conftest.py
    attack = get_attack("square", eps=0.3, queries=60)
    local = attack(from_classifier(model), x, y, seed=5)
    with serve_range(model) as served:
        remote, client = connect(served.url, served.keys, run=task)
        assert remote.task == model.task and remote.num_classes == model.num_classes
        over = attack(remote, x, y, seed=5)
        client.close()
        assert served.log.count() == int(over.queries.sum())
    assert torch.equal(over.success, local.success) and torch.equal(over.queries, local.queries)
    assert torch.allclose(over.x_adv, local.x_adv, atol=1e-6)
    assert bool((local.success & local.clean_correct).any())  # the comparison means something
