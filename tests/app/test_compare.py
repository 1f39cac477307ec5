"""The Evaluate tab's compare section: request building, the chart, side-by-side pairs, trajectory picks."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pytest

from app.render.comparison import comparison_figure, side_by_side_headers, side_by_side_rows, trajectory_columns
from app.tabs.evaluate_compare import (
    build_comparison_request,
    checkpoint_choices,
    pick_trajectory,
    show_comparison,
    side_by_side,
    start_comparison,
)
from backend.schemas.comparison import ComparisonExample, ComparisonPublic
from backend.schemas.run import CheckpointPublic
from tests.app._fakes import NOW, REFERENCE, FakeStudioClient, make_run

AGENT = "run #1 step 4 (grpo)"


def _example(label: str, task: str, prediction: str, em: float, tid: int | None) -> ComparisonExample:
    return ComparisonExample(
        label=label,
        dataset="hotpotqa",
        task_id=task,
        question=f"{task}?",
        gold=["Paris"],
        prediction=prediction,
        em=em,
        cover_em=em,
        f1=em,
        trajectory_id=tid,
    )


def _finished() -> ComparisonPublic:
    rows = [
        {
            "label": AGENT,
            "method": "agent",
            "paper_row": "GRPO",
            "tool_calls_per_question": 1.0,
            "run_id": 2,
            "scores": {"hotpotqa": {"em": 0.5, "cover_em": 0.5, "f1": 0.6}, "average": {"em": 0.5, "cover_em": 0.5}},
        },
        {
            "label": "naive-rag",
            "method": "naive-rag",
            "paper_row": "Naive RAG",
            "tool_calls_per_question": 0.0,
            "run_id": 3,
            "scores": {"hotpotqa": {"em": 0.0, "cover_em": 0.0, "f1": 0.1}, "average": {"em": 0.0}},
        },
    ]
    examples = [
        _example(AGENT, "q1", "Paris", 1.0, 11),
        _example(AGENT, "q2", "Rome", 0.0, 12),
        _example("naive-rag", "q1", "Lyon", 0.0, None),
    ]
    table = [["Method", "Paper row", "hotpotqa EM"], [AGENT, "GRPO", "0.500"], ["naive-rag", "Naive RAG", "0.000"]]
    return ComparisonPublic(
        id=1,
        name="c",
        created_at=NOW,
        labels=[AGENT, "naive-rag"],
        status="succeeded",
        spec={},
        members=[],
        rows=rows,
        datasets=["hotpotqa"],
        table=table,
        examples=examples,
        reference=REFERENCE,
        reference_source="Agent-R1 Table 3",
    )


def test_request_shares_examples_and_names_bad_input() -> None:
    request = build_comparison_request(["3:20", "4:"], ["naive-rag"], ["hotpotqa", "musique"], 5, " tiny ", True)
    assert [(c.run_id, c.step) for c in request.checkpoints] == [(3, 20), (4, None)]
    assert (request.limit, request.datasets, request.force_first_search) == (5, ["hotpotqa", "musique"], True)
    assert request.model == "tiny"
    assert request.answer_on_last_turn is False
    last = build_comparison_request([], ["base-tool-call"], ["hotpotqa"], None, "", True, answer_on_last_turn=True)
    assert last.shared_spec()["answer_on_last_turn"] is True
    assert last.limit is None
    with pytest.raises(ValueError, match="at least one checkpoint or baseline"):
        build_comparison_request([], [], ["hotpotqa"], 5, "", True)
    with pytest.raises(ValueError, match="datasets"):
        build_comparison_request([], ["direct"], [], 5, "", True)
    with pytest.raises(ValueError, match="at least 1"):
        build_comparison_request([], ["direct"], ["hotpotqa"], 0, "", True)
    dense = build_comparison_request([], ["naive-rag"], ["musique"], 5, "", True, False, "dense", 4, 200)
    assert {k: dense.shared_spec()[k] for k in ("retriever", "top_k", "max_passage_chars")} == {
        "retriever": "dense",
        "top_k": 4,
        "max_passage_chars": 200,
    }
    with pytest.raises(ValueError, match="between 20 and 100000"):
        build_comparison_request([], ["direct"], ["hotpotqa"], 5, "", True, False, "bm25", 3, 1)


def test_checkpoint_choices_and_start() -> None:
    fake = FakeStudioClient()
    fake.runs[1] = make_run(1, name="grpo-a")
    fake.checkpoints[1] = [
        CheckpointPublic(id=1, run_id=1, step=2, path="p2", created_at=NOW),
        CheckpointPublic(id=2, run_id=1, step=4, path="p4", created_at=NOW),
    ]
    assert checkpoint_choices(fake) == [("run #1 grpo-a · step 4", "1:4"), ("run #1 grpo-a · step 2", "1:2")]  # type: ignore[arg-type]
    cid, card, _ = start_comparison(fake, ["1:4"], ["naive-rag"], ["hotpotqa"], 2, "", True)  # type: ignore[arg-type]
    assert cid == 1
    assert "Comparison #1" in card
    sent = fake.calls[-1][1]
    assert (sent.checkpoints[0].step, sent.baselines, sent.limit, sent.model) == (4, ["naive-rag"], 2, "smollm2-135m")
    _, error, _ = start_comparison(fake, [], [], ["hotpotqa"], 2, "", True)  # type: ignore[arg-type]
    assert "at least one checkpoint" in error


def test_show_fills_table_chart_and_pickers() -> None:
    fake = FakeStudioClient()
    fake.comparisons[1] = _finished()
    card, table, figure, a, b, timer = show_comparison(fake, 1, "cover_em")  # type: ignore[arg-type]
    assert "succeeded" in card
    assert list(table.columns) == ["Method", "Paper row", "hotpotqa EM"]
    assert len(table) == 2
    names = [t.name for t in figure.data]
    assert names == [AGENT, "naive-rag", "paper · Naive RAG"]  # the fake's reference has no GRPO row
    assert list(figure.data[0].y) == [0.5, 0.5]  # hotpotqa, average
    assert list(figure.data[2].y) == [0.1916, 0.1916]
    assert (a["value"], b["value"]) == (AGENT, "naive-rag")
    assert timer.active is False
    missing = show_comparison(fake, 9, "em")  # type: ignore[arg-type]
    assert "not found" in missing[0]


def test_side_by_side_pairs_examples_and_picks_trajectories() -> None:
    comparison = _finished()
    rows = side_by_side_rows(comparison.examples, AGENT, "naive-rag")
    assert rows[0] == ["hotpotqa", "q1?", "Paris", "Paris", "1", "1.000", "11", "Lyon", "0", "0.000", "–"]
    assert rows[1][-4] == "(not evaluated)"
    assert len(side_by_side_headers(AGENT, "naive-rag")) == len(rows[0])
    fake = FakeStudioClient()
    fake.comparisons[1] = comparison
    table, info = side_by_side(fake, 1, AGENT, "naive-rag")  # type: ignore[arg-type]
    assert len(table) == 2
    assert "2 examples" in info
    assert "different rows" in side_by_side(fake, 1, AGENT, AGENT)[1]  # type: ignore[arg-type]
    col_a, _ = trajectory_columns(AGENT, "naive-rag")
    evt: Any = gr.SelectData(None, {"index": [0, col_a], "value": "11"})
    assert pick_trajectory(AGENT, "naive-rag", evt) == 11
    other: Any = gr.SelectData(None, {"index": [0, 1], "value": "q1?"})
    assert not isinstance(pick_trajectory(AGENT, "naive-rag", other), int)


def test_figure_without_rows_is_empty() -> None:
    empty = _finished().model_copy(update={"rows": []})
    assert len(comparison_figure(empty).data) == 0
