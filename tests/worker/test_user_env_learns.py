"""It learns in the user's own world: a unit-conversion environment defined only through the API the browser uses
(dataset uploaded, tool and reward written as Python sources), trained by the real train job.

The slow test trains the bundled SmolLM2-135M on CPU and asserts held-out exact match rises by >= 0.2; the fast
one runs the same API setup and 1 step with a tiny random model, so the setup itself cannot rot.
"""

from __future__ import annotations

import io
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.api.deps import get_enqueue
from backend.core.db import session_scope
from backend.crud import runs as runs_crud
from backend.main import create_app
from tests.worker.test_core_jobs import tiny_config
from worker import jobs
from worker.store import SqlRunStore

REPO = Path(__file__).resolve().parents[2]
ENV_FILE = REPO / "configs" / "envs" / "unit_conversion.toml"
API = "/api/v1"


def define_unit_env_via_api(client: TestClient) -> int:
    """Upload the tasks as CSV, save the tool, compose the environment with a user reward; its id."""
    spec = tomllib.loads(ENV_FILE.read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (ENV_FILE.parent / spec["data"]["location"]).read_text().splitlines()]
    csv = io.StringIO()
    csv.write("question,answer\n")
    csv.writelines(f"{r['question']},{r['answer'][0]}\n" for r in rows)
    upload = client.post(
        f"{API}/datasets/upload",
        files={"file": ("units.csv", csv.getvalue().encode())},
        data={"name": "unit conversion"},
    )
    assert upload.status_code == 201, upload.text
    tool_src = spec["tools"][0]["source"]
    tool = client.post(f"{API}/tools", json={"name": "convert", "source": tool_src})
    assert tool.status_code == 201, tool.text
    reward = next(t for t in spec["rubric"] if t.get("key"))
    body = {
        "name": "unit conversion",
        "tool_ids": [tool.json()["id"]],
        "dataset_id": upload.json()["dataset"]["id"],
        "rubric": {
            "weights": {"exact_match": 1.0, "format": 0.1},
            "functions": [{"name": reward["name"], "weight": 0.0, "source": reward["source"]}],
        },
        "limits": {"max_turns": 2, "max_new_tokens_per_turn": 24, "max_total_tokens": 512, "tool_timeout_s": 5},
        "settings": {
            "system_prompt": spec["system_prompt"],
            "question_template": spec["question_template"],
            "show_tool_schemas": False,
            "force_first_call": "convert",
            "answer_after_tool": True,
        },
    }
    env = client.post(f"{API}/environments", json=body)
    assert env.status_code == 201, env.text
    return int(env.json()["id"])


def _launch(db_url: str, config: dict[str, Any]) -> int:
    app = create_app()
    app.dependency_overrides[get_enqueue] = lambda: lambda task, run_id, **_: f"task-{run_id}"
    with TestClient(app, base_url="http://127.0.0.1", headers={"X-Studio-Client": "tests"}) as client:
        env_id = define_unit_env_via_api(client)
        run = client.post(f"{API}/runs", json={"environment_id": env_id, "preset": "quickstart", "config": config})
        assert run.status_code == 201, run.text
        assert run.json()["environment_version_id"] is not None
        return int(run.json()["id"])


def test_unit_env_defined_through_the_api_trains_one_step(db_url: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(tiny_model_dir, total_steps=1)
    del config["task"]
    run_id = _launch(db_url, config)
    store = SqlRunStore()
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path / "runs")
    run = store.load_run(run_id)
    assert run.status == "succeeded"
    with session_scope() as session:
        resolved = runs_crud.get_run(session, run_id=run_id).resolved_config
    assert resolved["rollout"]["max_turns"] == 2


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_it_learns_in_the_users_own_world(db_url: str, tmp_path: Path) -> None:
    """SmolLM2-135M, CPU, quickstart recipe, 40 steps: held-out EM rises by >= 0.2 within the issue's 30 minutes.

    Measured: 10 min 55 s on an idle 2-core AVX2 host in float32 (docs/own-world-results.md); the timeout leaves
    room for a shared host.
    """
    run_id = _launch(db_url, {"optim": {"total_steps": 40}, "eval": {"num_tasks": 48}})
    store = SqlRunStore()
    jobs.train_job(run_id, store, hostname="w", runs_dir=tmp_path / "runs")
    lines = (tmp_path / "runs" / f"run-{run_id}" / "metrics.jsonl").read_text().splitlines()
    evals = [m for m in map(json.loads, lines) if "eval/exact_match" in m]
    assert len(evals) >= 2, lines[:2]
    assert evals[-1]["eval/exact_match"] - evals[0]["eval/exact_match"] >= 0.2, evals
