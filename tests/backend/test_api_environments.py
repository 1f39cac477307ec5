"""Uploads (tasks, corpus, bad files), environment versions, export/import, the rendered prompt, run pinning."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from backend.queue import TaskName

API = "/api/v1"
TOOL_SOURCE = '''
def km_to_miles(km: float) -> float:
    """Convert kilometres to miles.

    Args:
        km: Distance in kilometres.
    """
    return round(km * 0.621371, 2)
'''
REWARD_SOURCE = "def reward(answer, gold, trajectory):\n    return float(answer in gold)\n"
CSV = "qid,q,a\n1,How many miles are 10 km?,6.21\n2,How many miles are 5 km?,3.11\n3,How many miles are 1 km?,0.62\n"


def _upload(client: TestClient, filename: str, data: bytes, **form: str) -> Any:
    return client.post(f"{API}/datasets/upload", files={"file": (filename, data)}, data=form)


def test_upload_csv_with_column_mapping_preview_and_normalised_file(client: TestClient, studio_env: Path) -> None:
    dry = _upload(
        client, "units.csv", CSV.encode(), question_column="q", answer_column="a", id_column="qid", dry_run="true"
    )
    assert dry.status_code == 201, dry.text
    dry = dry.json()
    assert dry["dataset"] is None
    assert dry["columns"] == ["a", "q", "qid"]
    assert dry["rows"][0] == {"id": "1", "question": "How many miles are 10 km?", "answer": ["6.21"]}
    assert client.get(f"{API}/datasets").json() == []  # a dry run registers nothing
    response = _upload(
        client, "units.csv", CSV.encode(), name="units", question_column="q", answer_column="a", id_column="qid"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    dataset = body["dataset"]
    assert (dataset["kind"], dataset["format"], dataset["counts"]["records"]) == ("file", "flat", 3)
    stored = Path(dataset["location"])
    assert stored.is_relative_to(studio_env.resolve())
    assert json.loads(stored.read_text().splitlines()[2])["answer"] == ["0.62"]
    assert dataset["content_hash"]
    preview = client.get(f"{API}/datasets/{dataset['id']}/preview", params={"limit": 1}).json()
    assert preview["rows"] == [dry["rows"][0]]
    assert not list(stored.parent.glob(".tmp-*"))


def test_upload_parquet_jsonl_and_corpus(client: TestClient) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"question": ["a?", "b?"], "answer": ["1", "2"]}), buf)
    parquet = _upload(client, "t.parquet", buf.getvalue()).json()
    assert parquet["total"] == 2
    jsonl = b'{"question": "x?", "answer": ["y", "z"]}\n'
    assert _upload(client, "t.jsonl", jsonl).json()["rows"][0]["answer"] == ["y", "z"]
    corpus = _upload(client, "docs.csv", b"title,text\nParis,Paris is in France.\n", kind="corpus").json()
    assert corpus["dataset"]["kind"] == "corpus"
    assert corpus["rows"] == [{"id": "doc-0", "title": "Paris", "text": "Paris is in France."}]


def test_bad_files_name_file_line_and_field_and_register_nothing(client: TestClient, studio_env: Path) -> None:
    bad_jsonl = b'{"question": "a?", "answer": "1"}\n{"question": "", "answer": "2"}\n'
    response = _upload(client, "mine.jsonl", bad_jsonl)
    assert response.status_code == 422
    assert response.json()["detail"] == "file: mine.jsonl: line 2: field 'question' must be a non-empty string"
    missing = _upload(client, "m.csv", b"q,a\nhello,1\n").json()["detail"]
    assert missing.startswith("file: m.csv: line 2: field 'question' must be a non-empty string; columns are a, q")
    broken = _upload(client, "b.jsonl", b'{"question": "a?", "answer": "1"}\n{oops\n').json()["detail"]
    assert broken.startswith("file: b.jsonl: line 2: invalid JSON")
    corpus = _upload(client, "c.jsonl", b'{"title": "x", "text": "ok"}\n{"title": "y"}\n', kind="corpus")
    assert corpus.json()["detail"] == "file: c.jsonl: line 2: field 'text' must be a non-empty string"
    assert _upload(client, "x.txt", b"hi").json()["detail"].startswith("file: x.txt: unsupported file type .txt")
    assert client.get(f"{API}/datasets").json() == []
    assert not (studio_env / "datasets").exists() or not list((studio_env / "datasets").iterdir())


def _environment(client: TestClient) -> tuple[dict, dict, dict]:
    tool = client.post(f"{API}/tools", json={"name": "km_to_miles", "source": TOOL_SOURCE}).json()
    tasks = _upload(client, "u.csv", CSV.encode(), question_column="q", answer_column="a").json()["dataset"]
    body = {
        "name": "units",
        "tool_ids": [tool["id"]],
        "dataset_id": tasks["id"],
        "rubric": {
            "weights": {"exact_match": 1.0, "format": 0.0},
            "functions": [{"name": "in_gold", "weight": 0.5, "source": REWARD_SOURCE}],
        },
        "limits": {"max_turns": 2, "tool_timeout_s": 3},
        "settings": {
            "system_prompt": "Use km_to_miles. Answer in <{answer_tag}></{answer_tag}>.",
            "force_first_call": "km_to_miles",
            "answer_after_tool": True,
            "heldout_fraction": 0.34,
        },
    }
    created = client.post(f"{API}/environments", json=body)
    assert created.status_code == 201, created.text
    return created.json(), tool, tasks


def test_environment_versions_are_immutable_and_pin_tool_versions(client: TestClient, enqueued: list) -> None:
    env, tool, tasks = _environment(client)
    assert env["version"] == 1
    v1 = client.get(f"{API}/environments/{env['id']}/versions/1").json()["spec"]
    assert v1["tools"][0]["key"] == f"tool-{tool['id']}-v1"
    assert v1["tools"][0]["source"] == TOOL_SOURCE
    assert v1["data"]["heldout_fraction"] == 0.34
    assert v1["data"]["location"] == tasks["location"]
    assert v1["rubric"][2] == {
        "name": "in_gold",
        "weight": 0.5,
        "key": f"reward-{env['id']}-v1-in_gold",
        "source": REWARD_SOURCE,
        "function": "reward",
        "kind": "trajectory",
    }
    assert v1["prefill"]["force_first_call"] == "km_to_miles"
    edited_tool = TOOL_SOURCE.replace("0.621371", "0.6214")
    client.patch(f"{API}/tools/{tool['id']}", json={"source": edited_tool})
    patched = client.patch(f"{API}/environments/{env['id']}", json={"limits": {"max_turns": 3}}).json()
    assert patched["version"] == 2
    versions = client.get(f"{API}/environments/{env['id']}/versions").json()
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["spec"] == v1  # unchanged
    assert versions[1]["spec"]["tools"][0]["key"] == f"tool-{tool['id']}-v2"
    assert versions[1]["spec"]["limits"]["max_turns"] == 3
    run = client.post(f"{API}/runs", json={"environment_id": env["id"], "preset": None}).json()
    assert run["environment_version_id"] == versions[1]["id"]
    pinned = client.post(
        f"{API}/runs", json={"environment_id": env["id"], "environment_version_id": versions[0]["id"]}
    ).json()
    assert pinned["environment_version_id"] == versions[0]["id"]
    check = client.post(f"{API}/environments/{env['id']}/validate").json()
    assert check["environment_version_id"] == versions[1]["id"]
    assert enqueued[-1] == (TaskName.VALIDATE_ENV, check["id"])


def test_environment_errors_name_the_field(client: TestClient) -> None:
    env, _tool, _tasks = _environment(client)
    bad_reward = {"weights": {}, "functions": [{"name": "r", "source": "def score(x):\n  return 1\n"}]}
    response = client.patch(f"{API}/environments/{env['id']}", json={"rubric": bad_reward})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("rubric.functions.r: define `def reward(")
    unknown = client.patch(f"{API}/environments/{env['id']}", json={"rubric": {"weights": {"bleu": 1}}})
    assert unknown.json()["detail"].startswith("rubric.weights: unknown term(s) bleu")
    forced = client.patch(f"{API}/environments/{env['id']}", json={"settings": {"force_first_call": "search"}})
    assert forced.json()["detail"].startswith("settings.force_first_call: 'search' is not one of")
    assert client.get(f"{API}/environments/{env['id']}").json()["version"] == 1  # failed edits leave no version


def test_export_import_and_prompt(client: TestClient) -> None:
    env, _tool, _tasks = _environment(client)
    exported = client.get(f"{API}/environments/{env['id']}/export").json()
    assert exported["format"] == "agent-studio-environment/1"
    imported = client.post(f"{API}/environments/import", json={"spec": exported["environment"], "name": "copy"})
    assert imported.status_code == 201, imported.text
    copy = client.get(f"{API}/environments/{imported.json()['id']}/versions/1").json()["spec"]
    assert copy["tools"] == exported["environment"]["tools"]
    assert copy["name"] == "copy"
    prompt = client.get(f"{API}/environments/{env['id']}/prompt").json()
    assert prompt["system_prompt"] == "Use km_to_miles. Answer in <answer></answer>."
    assert prompt["tool_schemas"][0]["function"]["name"] == "km_to_miles"
    assert prompt["first_turn_prefill"] == '<tool_call>{"name": "km_to_miles", "arguments": {'
    assert prompt["chars"] > 50


def test_tool_network_allow_list_and_files_go_into_the_spec(client: TestClient, studio_env: Path) -> None:
    env, _tool, tasks = _environment(client)
    v1 = client.get(f"{API}/environments/{env['id']}/versions/1").json()["spec"]
    assert "network" not in v1["tools"][0]
    assert "files" not in v1["tools"][0]
    access = {"km_to_miles": {"network": ["API.example.com", "*.rates.example.org:8443"], "files": [tasks["id"]]}}
    patched = client.patch(f"{API}/environments/{env['id']}", json={"settings": {"tool_access": access}})
    assert patched.status_code == 200, patched.text
    spec = client.get(f"{API}/environments/{env['id']}/versions/2").json()["spec"]
    name = Path(tasks["location"]).name
    assert spec["tools"][0]["network"] == ["api.example.com", "*.rates.example.org:8443"]
    assert spec["tools"][0]["files"] == {name: str(Path(tasks["location"]).resolve())}
    assert client.get(f"{API}/environments/{env['id']}").json()["settings"]["tool_access"]["km_to_miles"] == {
        "network": ["API.example.com", "*.rates.example.org:8443"],
        "files": [tasks["id"]],
    }
    # an exported file carries them; an import re-checks them
    exported = client.get(f"{API}/environments/{env['id']}/export").json()["environment"]
    assert client.post(f"{API}/environments/import", json={"spec": exported}).status_code == 201
    outside = studio_env.parent / "outside.jsonl"
    outside.write_text("{}\n")
    exported["tools"][0]["files"] = {"stolen.db": str(studio_env / "studio.db")}  # inside the data dir, not an upload
    refused = client.post(f"{API}/environments/import", json={"spec": exported})
    assert refused.status_code == 422
    assert "is studio state (database, runs, caches)" in refused.json()["detail"]
    planted = Path(tasks["location"]).with_name("planted.jsonl")
    planted.write_text("{}\n")
    exported["tools"][0]["files"] = {"planted.jsonl": str(planted)}  # in the uploads folder, but no dataset's file
    refused = client.post(f"{API}/environments/import", json={"spec": exported})
    assert "is not the file of a dataset of this studio" in refused.json()["detail"]
    exported["tools"][0]["files"] = {"x.jsonl": str(outside)}
    refused = client.post(f"{API}/environments/import", json={"spec": exported})
    assert refused.status_code == 422
    assert "outside the data roots" in refused.json()["detail"]
    exported["tools"][0]["files"], exported["tools"][0]["network"] = {}, ["http://api.example.com/v1"]
    refused = client.post(f"{API}/environments/import", json={"spec": exported})
    assert refused.json()["detail"].startswith("spec.tools[0].network: 'http://api.example.com/v1' is not a host")


def test_tool_access_errors_name_the_field(client: TestClient) -> None:
    env, _tool, tasks = _environment(client)

    def patch(access: dict) -> Any:
        return client.patch(f"{API}/environments/{env['id']}", json={"settings": {"tool_access": access}})

    assert (
        patch({"nope": {"network": ["a.example.com"]}})
        .json()["detail"]
        .startswith("settings.tool_access: nope: not a user tool of this environment (user tools: km_to_miles)")
    )
    bad_port = patch({"km_to_miles": {"network": ["a.example.com:99999"]}}).json()["detail"]
    assert (
        bad_port == "settings.tool_access.km_to_miles.network: 'a.example.com:99999': the port must be a number "
        "from 1 to 65535"
    )
    assert (
        patch({"km_to_miles": {"files": [10**6]}})
        .json()["detail"]
        .startswith("settings.tool_access.km_to_miles.files: dataset 1000000 does not exist")
    )
    twice = patch({"km_to_miles": {"files": [tasks["id"], tasks["id"]]}}).json()["detail"]
    assert "two files are named" in twice
    assert client.get(f"{API}/environments/{env['id']}").json()["version"] == 1
