"""Input bounds (issue #12): 64-bit ids, body and field caps, reserved config keys, pages, private files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.core.db import engine_for

API = "/api/v1"
BIG = str(2**63)
TOOL_SOURCE = '''def echo(text: str) -> str:
    """Echo.

    Args:
        text: What to echo.
    """
    return text
'''


@pytest.mark.parametrize(
    "path",
    [
        f"/runs/{BIG}",
        f"/runs/{BIG}/metrics",
        f"/tools/{BIG}",
        f"/trajectories/{BIG}",
        f"/datasets/{BIG}",
        f"/environments/{BIG}",
        f"/runs/1/checkpoints/{BIG}/export",
        f"/runs/-{BIG}",
    ],
)
def test_path_ids_beyond_64_bits_are_422_not_500(client: TestClient, path: str) -> None:
    method = client.post if path.endswith("export") else client.get
    response = method(f"{API}{path}")
    assert response.status_code == 422, response.text
    assert "between" in response.text


@pytest.mark.parametrize("params", [{"offset": BIG}, {"run_id": BIG}, {"step": BIG}, {"limit": 501}, {"offset": -1}])
def test_query_integers_out_of_range_are_422(client: TestClient, params: dict) -> None:
    assert client.get(f"{API}/trajectories", params=params).status_code == 422
    assert client.get(f"{API}/runs/1/metrics", params={"since": BIG}).status_code == 422


def test_body_ids_beyond_64_bits_are_422(client: TestClient) -> None:
    assert client.post(f"{API}/runs", json={"kind": "train", "environment_id": 2**63}).status_code == 422
    assert client.post(f"{API}/environments", json={"name": "e", "tool_ids": [2**63]}).status_code == 422


def test_oversized_body_is_413(client: TestClient) -> None:
    blob = "x" * (1024 * 1024 + 1)
    response = client.post(f"{API}/tools", content=blob, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_field_caps(client: TestClient) -> None:
    huge_source = TOOL_SOURCE + "#" * (64 * 1024)
    assert client.post(f"{API}/tools", json={"name": "t", "source": huge_source}).status_code == 422
    big_config = {"notes": "y" * (64 * 1024)}
    refused = client.post(f"{API}/runs", json={"kind": "train", "config": big_config})
    assert refused.status_code == 422
    assert "byte limit" in refused.text
    tool = client.post(f"{API}/tools", json={"name": "t", "source": TOOL_SOURCE}).json()
    args = {"text": "z" * (64 * 1024)}
    assert client.post(f"{API}/tools/{tool['id']}/test", json={"arguments": args}).status_code == 422
    label = {"score": 1.0, "note": "n" * 10_001}
    assert client.post(f"{API}/trajectories/1/labels", json=label).status_code == 422


def test_client_sent_internal_config_keys_are_refused(client: TestClient) -> None:
    for key, value in (("_auto_resumes", -1000), ("_resume", True), ("_auto_resumes", "x")):
        response = client.post(f"{API}/runs", json={"kind": "train", "config": {key: value}})
        assert response.status_code == 422, key
        assert key in response.text


def test_list_endpoints_page_with_a_maximum(client: TestClient) -> None:
    for i in range(3):
        source = TOOL_SOURCE.replace("def echo", f"def echo{i}")
        assert client.post(f"{API}/tools", json={"name": f"t{i}", "source": source}).status_code == 201
    assert [t["name"] for t in client.get(f"{API}/tools", params={"offset": 1, "limit": 1}).json()] == ["t1"]
    for path in (
        "/tools",
        "/datasets",
        "/environments",
        "/runs",
        "/trajectories",
        "/runs/1/checkpoints",
        "/tools/1/versions",
    ):
        assert client.get(f"{API}{path}", params={"limit": 501}).status_code == 422, path


def test_data_dir_and_database_are_private(db_url: str, studio_env: Path) -> None:
    engine_for(db_url).dispose()
    db_file = Path(db_url.split("///", 1)[1])
    assert stat.S_IMODE(db_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_file.parent.stat().st_mode) == 0o700
    fresh = studio_env / "nested" / "db.sqlite"
    with engine_for(f"sqlite:///{fresh}").connect():
        pass
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700


def test_streamed_body_without_length_is_capped_too(client: TestClient) -> None:
    def chunks():  # chunked transfer: no Content-Length for the guard to read up front
        for _ in range(17):
            yield b"x" * 65536

    response = client.post(f"{API}/tools", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text


def test_small_streamed_body_still_reaches_the_route(client: TestClient) -> None:
    import json

    payload = json.dumps({"name": "chunked", "source": TOOL_SOURCE}).encode()
    response = client.post(
        f"{API}/tools", content=iter([payload[:10], payload[10:]]), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
