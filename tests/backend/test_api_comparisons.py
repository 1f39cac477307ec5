"""Comparisons through TestClient: one eval run per checkpoint plus the baselines, one table, linked examples."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.crud import runs as runs_crud
from backend.crud import trajectories as traj_crud
from backend.models.run import Run
from backend.queue import TaskName
from worker.rl.evaluation.job import example_rows, example_trajectories
from worker.rl.evaluation.report import build_report
from worker.rl.evaluation.results import EvalResult, Prediction, summarize
from worker.rl.rewards.qa_metrics import QAScores

API = "/api/v1"


def _result(method: str, correct: bool) -> EvalResult:
    """A tiny real result: two hotpotqa examples, tool methods with a trajectory each."""
    trajectory = {
        "turns": [{"role": "assistant", "text": "<answer>x</answer>", "tool_calls": []}],
        "reward": 1.0,
        "token_ids": [1],
        "loss_mask": [1],
        "logprobs": [-0.1],
        "finish_reason": "answer",
    }
    tool = method in ("base-tool-call", "agent")
    predictions = tuple(
        Prediction(
            "hotpotqa",
            method,
            f"q{i}",
            f"question {i}?",
            ("Paris",),
            "Paris" if correct else "Rome",
            QAScores(float(correct), float(correct), float(correct)),
            2,
            1 if tool else 0,
            None,
            5,
            trajectory if tool else None,
        )
        for i in range(2)
    )
    return EvalResult(method, 0, (summarize("hotpotqa", method, predictions, 1.0),), predictions, 1.0)


def _finish(session: Session, run_id: int, results: list[EvalResult], algorithm: str = "GRPO") -> None:
    report: dict[str, Any] = build_report(results, agent_algorithm=algorithm)
    report["examples"] = example_rows(results)
    traj_crud.bulk_insert(session, run_id=run_id, step=0, trajectories=example_trajectories(results))
    runs_crud.add_evaluation(session, run_id=run_id, results=report)
    runs_crud.set_status(session, run_id=run_id, status="succeeded")
    session.commit()


def test_compare_checkpoints_and_baselines(client: TestClient, enqueued: list, session: Session) -> None:
    train_id = client.post(f"{API}/runs", json={"kind": "train", "preset": "quickstart"}).json()["id"]
    no_checkpoint = client.post(f"{API}/comparisons", json={"checkpoints": [{"run_id": train_id}]})
    assert no_checkpoint.status_code == 422
    assert "has no checkpoint" in no_checkpoint.json()["detail"]
    runs_crud.add_checkpoint(session, run_id=train_id, step=2, path="/runs/a/step_2")
    runs_crud.add_checkpoint(session, run_id=train_id, step=4, path="/runs/a/step_4")
    session.get(Run, train_id).resolved_config = {"algorithm": {"estimator": "rloo"}}  # type: ignore[union-attr]
    session.commit()
    body = {
        "checkpoints": [{"run_id": train_id}],
        "baselines": ["naive-rag", "base-tool-call"],
        "datasets": ["hotpotqa"],
        "limit": 2,
        "seed": 7,
    }
    created = client.post(f"{API}/comparisons", json=body)
    assert created.status_code == 201, created.text
    comparison = created.json()
    agent_run, baseline_run = (m["run_id"] for m in comparison["members"])
    assert enqueued[-2:] == [(TaskName.EVALUATE, agent_run), (TaskName.EVALUATE, baseline_run)]
    assert comparison["status"] == "queued"
    assert comparison["labels"] == [f"run #{train_id} step 4 (rloo)", "naive-rag, base-tool-call"]
    specs = [session.get(Run, r).eval_spec for r in (agent_run, baseline_run)]  # type: ignore[union-attr]
    for key in ("datasets", "limit", "seed", "force_first_search", "max_turns"):
        assert specs[0][key] == specs[1][key], f"members differ in {key}"  # type: ignore[index]
    assert specs[0]["checkpoint_path"] == "/runs/a/step_4"  # type: ignore[index]
    assert specs[0]["agent_algorithm"] == "RLOO"  # type: ignore[index]
    assert specs[1]["methods"] == ["naive-rag", "base-tool-call"]  # type: ignore[index]

    _finish(session, agent_run, [_result("agent", True)], "RLOO")
    partial = client.get(f"{API}/comparisons/{comparison['id']}").json()
    assert partial["status"] == "running"
    _finish(session, baseline_run, [_result("naive-rag", False), _result("base-tool-call", False)])
    done = client.get(f"{API}/comparisons/{comparison['id']}").json()
    assert done["status"] == "succeeded"
    rows = {r["label"]: r for r in done["rows"]}
    assert set(rows) == {f"run #{train_id} step 4 (rloo)", "naive-rag", "base-tool-call"}
    agent = rows[f"run #{train_id} step 4 (rloo)"]
    assert agent["scores"]["hotpotqa"]["em"] == 1.0
    assert agent["scores"]["hotpotqa"]["paper_em"] == 0.4089  # the RLOO row of the paper
    assert rows["naive-rag"]["scores"]["average"]["f1"] == 0.0
    assert rows["base-tool-call"]["tool_calls_per_question"] == 1.0
    by_label = {(e["label"], e["task_id"]): e for e in done["examples"]}
    assert len(by_label) == 6
    assert by_label[("naive-rag", "q0")]["trajectory_id"] is None
    tid = by_label[(f"run #{train_id} step 4 (rloo)", "q1")]["trajectory_id"]
    replay = client.get(f"{API}/trajectories/{tid}").json()
    assert (replay["run_id"], replay["task_id"]) == (agent_run, "q1")
    assert all("examples" not in (m["results"] or {}) for m in done["members"])

    listed = client.get(f"{API}/comparisons").json()
    assert [(c["id"], c["status"]) for c in listed] == [(comparison["id"], "succeeded")]
    assert client.get(f"{API}/comparisons/999").status_code == 404


def test_comparison_bad_input_names_the_field(client: TestClient) -> None:
    assert "at least one checkpoint or baseline" in client.post(f"{API}/comparisons", json={}).text
    assert client.post(f"{API}/comparisons", json={"baselines": ["agent"]}).status_code == 422
    unforced = {"baselines": ["base-tool-call"], "force_first_search": False, "forced_search_turns": 2}
    assert "needs force_first_search" in client.post(f"{API}/comparisons", json=unforced).text
    twice = client.post(f"{API}/comparisons", json={"baselines": ["direct", "direct"]})
    assert "listed twice" in twice.text
    eval_run = client.post(f"{API}/evaluations", json={}).json()["id"]
    not_train = client.post(f"{API}/comparisons", json={"checkpoints": [{"run_id": eval_run}]})
    assert (not_train.status_code, "not a train run" in not_train.text) == (422, True)
