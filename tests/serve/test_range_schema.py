"""A bounded schemathesis run against the range's OpenAPI schema finds no server error (5xx),
with and without a key, on every route."""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from medfool.defences.stateful import Blacklight  # noqa: E402
from medfool.models import load_classifier  # noqa: E402
from medfool.serve.app import create_app  # noqa: E402
from medfool.serve.keys import KeyStore, new_key  # noqa: E402
from medfool.serve.limits import Limits  # noqa: E402
from medfool.serve.querylog import QueryLog  # noqa: E402


def test_no_server_errors_on_the_schema(tiny_model: Path, tmp_path: Path) -> None:
    model, _ = load_classifier(str(tiny_model))
    key, record = new_key("fuzz")
    app = create_app(model, KeyStore([record]), Limits(1e6, 10**6, 0), QueryLog(tmp_path / "q.sqlite"),
                     detector=Blacklight(), max_bytes=100_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/model/predict", "/v2/models/{model_name}/infer",
                                              "/v2/models/{model_name}", "/v2/health/ready"}
    seen: dict[int, int] = {}
    for op in operations:
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(op.as_strategy())
        def check(case: schemathesis.Case) -> None:
            for headers in ({}, {"X-API-Key": key}):
                resp = case.call(headers=headers)
                seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
                assert resp.status_code < 500, f"{case.path}: {resp.status_code} {resp.text[:200]}"

        check()
    print("status codes seen:", dict(sorted(seen.items())))
    assert seen.get(200, 0) > 0 and seen.get(401, 0) > 0 and seen.get(422, 0) > 0, seen
