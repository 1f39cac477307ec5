"""`StudioClient` against `httpx.MockTransport`: paths, params, bodies, token, errors → `StudioAPIError`."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from app.client import StudioAPIError, StudioClient
from backend.schemas.trajectory import LabelCreate
from tests.app._fakes import make_run

Handler = Callable[[httpx.Request], httpx.Response]


def client_with(handler: Handler, token: str = "") -> StudioClient:
    return StudioClient("http://api.test/", token=token, transport=httpx.MockTransport(handler))


def test_list_runs_sends_filters_and_parses_page() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [make_run(1).model_dump(mode="json")], "total": 1})

    page = client_with(handler, token="s3cret").list_runs(status="running", limit=5)
    assert page.items[0].id == 1
    assert page.total == 1
    assert seen[0].url.path == "/api/v1/runs"
    assert dict(seen[0].url.params) == {"status": "running", "offset": "0", "limit": "5"}
    assert seen[0].headers["authorization"] == "Bearer s3cret"


def test_metrics_since_and_trajectory_bool_filters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/metrics"):
            return httpx.Response(
                200, json={"run_id": 4, "points": [{"step": 3, "values": {"a": 1.0}}], "last_step": 3}
            )
        return httpx.Response(200, json={"items": [], "total": 0})

    client = client_with(handler)
    assert client.get_metrics(4, since=2).last_step == 3
    client.list_trajectories(run_id=4, has_parse_error=False, labeled=True)
    assert seen[0].url.path == "/api/v1/runs/4/metrics"
    assert seen[0].url.params["since"] == "2"
    params = dict(seen[1].url.params)
    assert params["has_parse_error"] == "false"
    assert params["labeled"] == "true"
    assert "step" not in params


def test_post_bodies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        if request.url.path.endswith("/labels"):
            return httpx.Response(201, json={"id": 1, "trajectory_id": 9, "created_at": "2025-01-01T00:00:00", **body})
        return httpx.Response(202, json=make_run(5, kind="tool_test").model_dump(mode="json"))

    client = client_with(handler)
    assert client.test_tool(3, {"text": "hi"}).id == 5
    label = client.create_label(9, LabelCreate(score=1.0, step_scores=[0.5], note="ok"))
    assert label.score == 1.0
    assert seen[0].url.path == "/api/v1/tools/3/test"
    assert json.loads(seen[0].content) == {"arguments": {"text": "hi"}}
    assert json.loads(seen[1].content)["step_scores"] == [0.5]


def test_http_error_carries_server_detail() -> None:
    client = client_with(lambda r: httpx.Response(409, json={"detail": "run 4 is running; cancel it first"}))
    with pytest.raises(StudioAPIError) as info:
        client.resume_run(4)
    assert info.value.status_code == 409
    assert "run 4 is running; cancel it first" in str(info.value)
    assert "POST /api/v1/runs/4/resume" in str(info.value)


def test_validation_error_list_is_made_readable() -> None:
    detail = [{"loc": ["body", "name"], "msg": "String should match pattern", "type": "string_pattern_mismatch"}]
    client = client_with(lambda r: httpx.Response(422, json={"detail": detail}))
    with pytest.raises(StudioAPIError, match=r"name: String should match pattern"):
        client.list_tools()


def test_unreachable_api_says_how_to_fix() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(StudioAPIError, match=r"cannot reach the Agent Studio API.*studio up"):
        client_with(handler).health()


def test_malformed_answer_is_an_api_error_not_a_crash() -> None:
    with pytest.raises(StudioAPIError, match="unexpected answer from /runs/1"):
        client_with(lambda r: httpx.Response(200, json={"id": "x"})).get_run(1)


def test_delete_204_returns_none() -> None:
    assert client_with(lambda r: httpx.Response(204)).delete_tool(1) is None
