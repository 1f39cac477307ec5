"""Property-based fuzzing of the whole API from its OpenAPI spec: no input may produce a 500.

schemathesis generates bounded examples for every operation (paths, queries,
bodies) in both positive mode (valid by the spec) and negative mode (violating it: wrong types, ids past
2^63, out-of-range pages). The app's queue is
the conftest's recorder, so no consumer exists and random bodies cannot start
training. Only server errors fail the test; 4xx answers are the point. (The
schemathesis pytest plugin's fixture loader does not run under pytest 9, so
each operation's strategy is driven by hypothesis directly.)
"""

from __future__ import annotations

from collections import Counter

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

MAX_EXAMPLES = 25
"""Per operation; ~40 operations keep the run near half a minute on two CPU cores."""
BASE_URL = "http://127.0.0.1"
HEADERS = {"X-Studio-Client": "schemathesis"}
"""A loopback address and the studio's client header, so the guard lets requests reach the routes."""


def test_no_input_makes_a_server_error(client: TestClient) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    server_errors: list[str] = []
    statuses: Counter[int] = Counter()
    refused: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30

    for operation in operations:
        both = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

        @given(case=both)
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        def fuzz(case: schemathesis.Case) -> None:
            try:
                response = case.call(base_url=BASE_URL, headers=HEADERS)
            except Exception as exc:  # the test transport re-raises what the app raised: a 500 in production
                server_errors.append(f"{case.method} {case.formatted_path} raised {exc.__class__.__name__}: {exc}")
                return
            statuses[response.status_code] += 1
            if response.status_code in (401, 403) and not case.path.endswith("/auth/login"):
                refused.append(f"{case.method} {case.formatted_path} -> {response.status_code}")
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}")

        fuzz()
    assert server_errors == [], "\n".join(server_errors[:10])
    # the requests really reached the routes (a guard refusing everything would hide every bug)
    assert refused == [], refused[:5]
    assert sum(n for code, n in statuses.items() if code < 300) > 100, statuses
