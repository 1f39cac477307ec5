"""Tools, datasets and environments through TestClient against a migrated SQLite DB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.queue import TaskName

API = "/api/v1"

TOOL_SOURCE = '''
def lookup(city: str, limit: int = 3) -> str:
    """Find facts about a city.

    Args:
        city: The city name.
        limit: How many facts to return.
    """
    return city.upper() * limit
'''


def _tool(client: TestClient, name: str = "lookup") -> dict:
    response = client.post(f"{API}/tools", json={"name": name, "source": TOOL_SOURCE})
    assert response.status_code == 201, response.text
    return response.json()


def test_tool_crud_versions_and_errors(client: TestClient) -> None:
    tool = _tool(client)
    assert tool["tool_schema"]["parameters"]["required"] == ["city"]
    assert tool["description"] == "Find facts about a city."
    assert client.post(f"{API}/tools", json={"name": "lookup", "source": TOOL_SOURCE}).status_code == 409
    bad = client.post(f"{API}/tools", json={"name": "x", "source": "def f(a):\n  return a\n"})
    assert bad.status_code == 422
    assert "source" in bad.json()["detail"]
    assert client.post(f"{API}/tools", json={"name": "x"}).status_code == 422

    new_source = TOOL_SOURCE.replace("limit: int = 3", "limit: int")
    updated = client.patch(f"{API}/tools/{tool['id']}", json={"source": new_source}).json()
    assert updated["version"] == 2
    assert updated["tool_schema"]["parameters"]["required"] == ["city", "limit"]
    versions = client.get(f"{API}/tools/{tool['id']}/versions").json()
    assert [v["version"] for v in versions] == [2, 1]
    assert [t["name"] for t in client.get(f"{API}/tools").json()] == ["lookup"]
    assert client.get(f"{API}/tools/999").status_code == 404
    assert client.patch(f"{API}/tools/999", json={"description": "x"}).status_code == 404
    assert client.delete(f"{API}/tools/{tool['id']}").status_code == 204
    assert client.get(f"{API}/tools/{tool['id']}").status_code == 404


def test_builtin_tool_schema_and_unknown_builtin(client: TestClient) -> None:
    ok = client.post(f"{API}/tools", json={"name": "search", "kind": "builtin", "source": "bm25_search"})
    assert ok.json()["tool_schema"]["parameters"]["required"] == ["query"]
    bad = client.post(f"{API}/tools", json={"name": "s2", "kind": "builtin", "source": "nope"})
    assert bad.status_code == 422
    assert "bm25_search" in bad.json()["detail"]


def test_tool_test_creates_run_and_enqueues_on_cpu(client: TestClient, enqueued: list) -> None:
    tool = _tool(client)
    response = client.post(f"{API}/tools/{tool['id']}/test", json={"arguments": {"city": "Paris"}})
    assert response.status_code == 202
    run = response.json()
    assert run["kind"] == "tool_test"
    assert run["status"] == "queued"
    assert run["requested_config"]["arguments"] == {"city": "Paris"}
    assert enqueued == [(TaskName.TOOL_TEST, run["id"])]
    assert client.post(f"{API}/tools/999/test", json={}).status_code == 404


def test_datasets_register_preview_and_errors(client: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": str(i)}) for i in range(7)) + "\n")
    created = client.post(f"{API}/datasets", json={"name": "mine", "kind": "file", "location": str(path)})
    assert created.status_code == 201
    dataset = created.json()
    assert dataset["counts"] == {"records": 7}
    preview = client.get(f"{API}/datasets/{dataset['id']}/preview", params={"limit": 2}).json()
    assert preview["rows"] == [{"question": "q0", "answer": "0"}, {"question": "q1", "answer": "1"}]
    assert preview["total"] == 7
    missing = client.post(f"{API}/datasets", json={"name": "x", "kind": "file", "location": str(tmp_path / "no")})
    assert missing.status_code == 422
    assert "location" in missing.json()["detail"]
    demo = client.post(f"{API}/datasets", json={"name": "demo", "kind": "demo", "location": "0"}).json()
    assert client.get(f"{API}/datasets/{demo['id']}/preview").json()["rows"] == []
    assert len(client.get(f"{API}/datasets").json()) == 2
    assert client.get(f"{API}/datasets/999").status_code == 404


def test_shared_hotpotqa_sample_previews(client: TestClient, studio_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hotpotqa" / "dev_sample.json"
    if not path.is_file():
        return
    outside = client.post(f"{API}/datasets", json={"name": "hp", "location": str(path), "format": "hotpotqa"})
    assert outside.status_code == 422
    assert "outside the data roots" in outside.json()["detail"]
    monkeypatch.setenv("STUDIO_DATA_ROOTS", json.dumps([str(studio_env), str(path.parents[1])]))
    dataset = client.post(f"{API}/datasets", json={"name": "hp", "location": str(path), "format": "hotpotqa"}).json()
    rows = client.get(f"{API}/datasets/{dataset['id']}/preview", params={"limit": 1}).json()["rows"]
    assert "question" in rows[0]
    assert dataset["counts"]["records"] >= 1


def test_environment_crud_validate_and_refs(client: TestClient, enqueued: list) -> None:
    tool = _tool(client)
    bad = client.post(f"{API}/environments", json={"name": "e", "tool_ids": [999]})
    assert bad.status_code == 422
    assert "tool_ids" in bad.json()["detail"]
    too_many = client.post(f"{API}/environments", json={"name": "e", "limits": {"max_turns": 0}})
    assert too_many.status_code == 422
    env = client.post(f"{API}/environments", json={"name": "e", "tool_ids": [tool["id"]]}).json()
    assert env["limits"]["max_turns"] == 4
    assert env["rubric"]["answer_tag"] == "answer"
    patched = client.patch(f"{API}/environments/{env['id']}", json={"limits": {"max_turns": 2}}).json()
    assert patched["limits"]["max_turns"] == 2
    run = client.post(f"{API}/environments/{env['id']}/validate").json()
    assert run["kind"] == "validate"
    assert enqueued[-1] == (TaskName.VALIDATE_ENV, run["id"])
    assert client.post(f"{API}/environments/999/validate").status_code == 404
    assert len(client.get(f"{API}/environments").json()) == 1
    assert client.delete(f"{API}/environments/{env['id']}").status_code == 204
    # soft delete: gone from the list, still readable (runs keep their record)
    assert client.get(f"{API}/environments").json() == []
    assert client.get(f"{API}/environments/{env['id']}").json()["deleted_at"] is not None
