"""Tab handlers called directly over `FakeStudioClient`: what they send, what they show, how errors read."""

from __future__ import annotations

import pytest

from app.tabs import evaluate, home, labeling, runs, tools, train, trajectories
from backend.schemas.run import CheckpointPublic, MetricPoint
from tests.app._fakes import NOW, REPORT, FakeStudioClient, make_run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request warns


def test_save_tool_creates_then_updates_and_lists_versions(fake: FakeStudioClient) -> None:
    _picker, tool_id, schema, versions, status = tools.save_tool(fake, None, "word_count", "", tools.EXAMPLE_SOURCE)
    assert tool_id == 1
    assert schema["name"] == "word_count"
    assert "version 1" in status
    _, _, _, versions, status = tools.save_tool(fake, 1, "word_count", "", tools.EXAMPLE_SOURCE + "\n")
    assert [row[0] for row in versions] == ["2", "1"]
    assert "version 2" in status


def test_save_tool_error_is_readable(fake: FakeStudioClient) -> None:
    out = tools.save_tool(fake, None, "t", "", "def t(x: int) -> int:\n    return x\n")
    assert "no Args section" in out[-1]
    assert out[-1].startswith("⚠️")


def test_tool_test_flow_queues_then_polls_until_done(fake: FakeStudioClient) -> None:
    tools.save_tool(fake, None, "word_count", "", tools.EXAMPLE_SOURCE)
    run_id, status, _, timer = tools.start_tool_test(fake, 1, '{"text": "a b"}')
    assert fake.calls[-1] == ("test_tool", {"text": "a b"})
    assert "queued" in status
    assert timer.active
    assert tools.poll_tool_test(fake, run_id)[2].active
    fake.runs[run_id] = make_run(
        run_id,
        kind="tool_test",
        status="succeeded",
        result={"ok": True, "result": 2, "duration_s": 0.012, "error": None},
    )
    status, result, timer = tools.poll_tool_test(fake, run_id)
    assert "Returned in 12 ms" in status
    assert result["result"] == 2
    assert not timer.active


def test_tool_test_rejects_bad_json_without_calling_the_api(fake: FakeStudioClient) -> None:
    _, status, _, timer = tools.start_tool_test(fake, 1, "{not json")
    assert "arguments is not valid JSON" in status
    assert not timer.active
    assert all(name != "test_tool" for name, _ in fake.calls)


def test_launch_sends_only_changed_fields_and_advanced_json(fake: FakeStudioClient) -> None:
    values = train.fill_from_preset("quickstart")
    values[1] = 2  # group size
    values[7] = 2.0  # total steps, as gr.Number sends it
    run_id, status = train.launch_run(fake, "tiny", "quickstart", None, *values, '{"eval": {"num_tasks": 0}}')
    sent = fake.calls[-1][1]
    assert sent.config == {"rollout": {"group_size": 2}, "optim": {"total_steps": 2}, "eval": {"num_tasks": 0}}
    assert sent.preset == "quickstart"
    assert sent.kind == "train"
    assert run_id == sent_id(fake)
    assert "Launched" in status


def sent_id(fake: FakeStudioClient) -> int:
    return max(fake.runs)


def test_summary_says_what_and_where() -> None:
    text = train.summarize_launch("quickstart", None, *train.fill_from_preset("quickstart"), "{}")
    assert "preset as is" in text
    assert "`gpu` queue" in text
    assert "smollm2-135m" in text


def test_refresh_runs_rows_and_empty_state() -> None:
    empty = FakeStudioClient()
    rows, hint = runs.refresh_runs(empty)
    assert rows == []
    assert "Launch one from the **Train** tab" in hint
    empty.fail = "cannot reach the Agent Studio API"
    rows, hint = runs.refresh_runs(empty)
    assert "cannot reach" in hint


def test_poll_run_fetches_only_new_points(fake: FakeStudioClient) -> None:
    card, _, fig, points = runs.load_run(fake, 1)
    assert "Run #1" in card
    assert len(points) == 2
    assert fig is not None
    fake.metrics[1].append(MetricPoint(step=3, values={"reward/mean": 0.5, "rollout/zero_std_group_frac": 1.0}))
    card, alerts, fig, merged = runs.poll_run(fake, 1, points)
    assert ("get_metrics", 2) in fake.calls
    assert [p.step for p in merged] == [1, 2, 3]
    assert "No learning signal" in alerts
    unchanged = runs.poll_run(fake, 1, merged)
    assert unchanged[3] is not merged
    assert not isinstance(unchanged[3], list)


def test_cancel_and_resume_conflict(fake: FakeStudioClient) -> None:
    assert "Error" not in runs.cancel_run(fake, 1)
    assert fake.runs[1].status == "cancelling"
    fake.runs[1] = make_run(1, status="running")
    assert "resume is refused" in runs.resume_run(fake, 1)
    assert "select a run first" in runs.cancel_run(fake, None)


def test_search_and_open_trajectory_with_group(fake: FakeStudioClient) -> None:
    rows, info = trajectories.search_trajectories(fake, 1, 1, None, None, "any", "no", "any", "any", 1)
    assert [r[0] for r in rows] == [10, 11]
    assert "2 trajectories" in info
    assert fake.calls[-1][1]["has_tool_error"] is False
    assert fake.calls[-1][1]["has_parse_error"] is None
    replay, group = trajectories.open_trajectory(fake, 10)
    assert "role-tool" in replay
    assert 'data-trajectory="11"' in group
    _, info = trajectories.search_trajectories(fake, 1, 99, None, None, "any", "any", "any", "any", 1)
    assert "No trajectories match" in info


def test_jump_from_runs_step_filters_trajectories() -> None:
    from app.main import jump_to_step

    run_id, step, tabs = jump_to_step(1, 7)
    assert (run_id, step, tabs.selected) == (1, 7, "trajectories")


def test_label_queue_submit_next_and_skip(fake: FakeStudioClient) -> None:
    session, progress, view, _ = labeling.load_queue(fake, 1)
    assert session.current == 10
    assert "0 labeled" in progress
    assert "role-assistant" in view
    out = labeling.submit_label(fake, session, 1.0, "1, 0.5", "good search", "ann", "+-")
    session, progress, view, _, note, marks = out
    assert fake.labels[0][0] == 10
    assert fake.labels[0][1].step_scores == [1.0, 0.5]
    assert fake.labels[0][1].labeler == "ann"
    assert (fake.labels[1][0], fake.labels[1][1].kind) == (10, "step")
    assert [(m.turn, m.good) for m in fake.labels[1][1].step_marks] == [(0, True), (1, False)]
    assert marks == ""
    assert session.current == 11
    assert "1 labeled" in progress
    assert note == ""
    session, progress, view, _ = labeling.skip_item(fake, session)
    assert session.current is None
    assert "Nothing left to label" in view


def test_label_rejects_bad_step_scores(fake: FakeStudioClient) -> None:
    session = labeling.load_queue(fake, 1)[0]
    out = labeling.submit_label(fake, session, 1.0, "1, lots", "", "")
    assert "step scores must be numbers" in out[1]
    assert fake.labels == []


def test_eval_request_uses_newest_checkpoint(fake: FakeStudioClient) -> None:
    fake.checkpoints[1] = [
        CheckpointPublic(id=1, run_id=1, step=1, path="/c/step_1", created_at=NOW),
        CheckpointPublic(id=2, run_id=1, step=2, path="/c/step_2", created_at=NOW),
    ]
    request = evaluate.build_eval_request(fake, ["hotpotqa"], ["agent"], 1, "smollm2-135m", 5)
    assert request.checkpoint_path == "/c/step_2"
    assert request.limit == 5
    assert request.model == "smollm2-135m"
    with pytest.raises(ValueError, match="tick at least one method"):
        evaluate.build_eval_request(fake, ["hotpotqa"], [], None, "", 5)
    with pytest.raises(ValueError, match="has no checkpoint"):
        evaluate.build_eval_request(FakeStudioClient(), ["hotpotqa"], ["agent"], 3, "", 5)


def test_eval_request_carries_the_search_scaffold(fake: FakeStudioClient) -> None:
    default = evaluate.build_eval_request(fake, ["hotpotqa"], ["naive-rag"], None, "", 5)
    assert (default.retriever, default.top_k, default.max_passage_chars) == ("bm25", 3, 400)
    assert (default.force_first_search, default.answer_on_last_turn) == (False, False)
    picked = evaluate.build_eval_request(fake, ["2wiki"], ["base-tool-call"], None, "", 5, "dense", 5, 250, True, True)
    assert (picked.retriever, picked.top_k, picked.max_passage_chars) == ("dense", 5, 250)
    assert (picked.force_first_search, picked.answer_on_last_turn) == (True, True)
    run_id, _, _ = evaluate.start_evaluation(
        fake, ["hotpotqa"], ["naive-rag"], None, "", 2, "dense", 2, 300, False, False
    )
    assert fake.runs[run_id].eval_spec is not None
    assert (fake.runs[run_id].eval_spec["retriever"], fake.runs[run_id].eval_spec["max_passage_chars"]) == (
        "dense",
        300,
    )
    with pytest.raises(ValueError, match=r"top-k\) must be between 1 and 100, got 0"):
        evaluate.build_eval_request(fake, ["hotpotqa"], ["naive-rag"], None, "", 5, "bm25", 0, 400)
    with pytest.raises(ValueError, match="retriever must be one of bm25, dense"):
        evaluate.build_eval_request(fake, ["hotpotqa"], ["naive-rag"], None, "", 5, "tfidf", 3, 400)
    _, error, timer = evaluate.start_evaluation(fake, ["hotpotqa"], ["naive-rag"], None, "", 2, "bm25", 3, 5)
    assert "characters kept of each passage must be between 20" in error
    assert not timer.active


def test_eval_poll_shows_table_when_done(fake: FakeStudioClient) -> None:
    run_id, card, timer = evaluate.start_evaluation(fake, ["hotpotqa"], ["naive-rag"], None, "", 10)
    assert timer.active
    assert fake.runs[run_id].eval_spec is not None
    assert fake.runs[run_id].eval_spec["methods"] == ["naive-rag"]
    assert "queued" in card
    assert evaluate.poll_evaluation(fake, run_id)[3].active
    fake.runs[run_id] = make_run(run_id, kind="eval", status="succeeded", finished_at=NOW)
    fake.evaluations[run_id] = REPORT
    card, rows, fig, timer = evaluate.poll_evaluation(fake, run_id)
    assert rows[0][1:3] == ["naive-rag", "hotpotqa"]
    assert not timer.active
    assert any(t.name == "paper · Naive RAG" for t in fig.data)


def test_home_guide_and_unreachable_api(fake: FakeStudioClient) -> None:
    health, guide = home.refresh_home(fake)
    assert "✅ **Workers**" in health
    assert "**Tools**: write your first tool" in guide
    assert "#1" in guide
    fake.fail = "cannot reach the Agent Studio API at http://x"
    health, guide = home.refresh_home(fake)
    assert "cannot reach" in health
    assert "studio up" in guide


def test_choosing_gae_sends_a_value_loss_weight_that_the_user_can_override() -> None:
    values = train.fill_from_preset("quickstart")
    values[[k for _, k in train.FIELDS].index("estimator")] = "gae"
    assert train.build_overrides("quickstart", values, "")["algorithm"]["vf_coef"] == train.GAE_VF_COEF
    custom = train.build_overrides("quickstart", values, '{"algorithm": {"vf_coef": 0.1}}')
    assert custom["algorithm"]["vf_coef"] == 0.1
    values[[k for _, k in train.FIELDS].index("estimator")] = "grpo"
    assert "vf_coef" not in train.build_overrides("quickstart", values, "").get("algorithm", {})


def test_a_search_opens_its_first_trajectory() -> None:
    assert trajectories.first_trajectory_id([[7, 1, 1, "g", 0.0], [8, 1, 1, "g", 1.0]]) == 7
    assert not isinstance(trajectories.first_trajectory_id([]), int)
