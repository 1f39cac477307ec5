"""Render functions: trajectory HTML (tool blocks, mask classes, logprob titles), alerts, charts, tables."""

from __future__ import annotations

import math

import pytest

from app.render.alerts import health_alerts, render_alerts
from app.render.compare import render_group
from app.render.evaluation import evaluation_figure, report_rows
from app.render.metrics import merge_points, metrics_figure
from app.render.runs import format_duration, run_card, run_rows
from app.render.trajectory import render_tokens, render_trajectory
from backend.schemas.run import EvaluationPublic, MetricPoint
from tests.app._fakes import REFERENCE, REPORT, make_run, make_trajectory, trajectory_data


def test_trajectory_html_has_role_blocks_tool_call_json_and_breakdown() -> None:
    html = render_trajectory(make_trajectory(10))
    for role in ("user", "assistant", "tool"):
        assert f"role-{role}" in html
    assert 'data-kind="tool-call"' in html
    assert "&quot;query&quot;: &quot;capital of France&quot;" in html  # pretty-printed, escaped JSON
    assert "exact_match" in html
    assert "Per-step rewards: 0.10, 0.90" in html
    assert "Final answer: <b>Paris</b>" in html


def test_tokens_are_coloured_by_mask_with_logprob_titles() -> None:
    html = render_tokens(trajectory_data())
    assert html.count('class="tok mask-0" title') == 5
    assert html.count('class="tok mask-1" title') == 3
    assert 'title="token 3 · id 103 · mask 1 · logprob -0.1000"' in html
    assert "mask-1 lowp" in html  # the -3.2 token is flagged as unlikely
    assert 'token 0 · id 100 · mask 0"' in html  # no logprob on prompt tokens


def test_token_texts_are_used_and_escaped_when_present() -> None:
    data = trajectory_data()
    data["token_texts"] = ["<b>", "x", "y", "a", "b", "c", "d", "e", "f"]
    html = render_tokens(data)
    assert "&lt;b&gt;" in html
    assert "<b></span>" not in html


def test_parse_error_is_shown_and_text_escaped() -> None:
    traj = make_trajectory(5, has_parse_error=True)
    traj.data["turns"][1]["parse_error"] = "bad JSON <here>"
    html = render_trajectory(traj)
    assert "parse error: bad JSON &lt;here&gt;" in html
    assert "as-chip bad" in html


def test_group_comparison_orders_best_first_and_notes_flat_groups() -> None:
    best, worst = make_trajectory(1, reward=1.0), make_trajectory(2, reward=0.0)
    html = render_group([worst, best], highlight_id=2)
    assert html.index('data-trajectory="1"') < html.index('data-trajectory="2"')
    assert "(viewing)" in html
    flat = render_group([make_trajectory(3, reward=0.0), make_trajectory(4, reward=0.0)])
    assert "no learning signal" in flat


def _points(key: str, values: list[float]) -> list[MetricPoint]:
    return [MetricPoint(step=i + 1, values={key: v}) for i, v in enumerate(values)]


def test_alert_tool_collapse() -> None:
    alerts = health_alerts(_points("rollout/tool_calls_per_traj", [1.5, 1.6, 1.4, 0.1, 0.0, 0.1]))
    assert [a.title for a in alerts] == ["Tool-call rate collapsed"]
    assert health_alerts(_points("rollout/tool_calls_per_traj", [1.5, 1.6, 1.4, 1.3, 1.2, 1.1])) == []


def test_alert_parse_spike_and_flat_groups_and_nan_loss() -> None:
    assert health_alerts(_points("rollout/parse_error_rate", [0.05, 0.1, 0.8]))[0].title == "Parse errors spiking"
    assert health_alerts(_points("rollout/parse_error_rate", [0.6, 0.6, 0.65])) == []
    assert health_alerts(_points("rollout/zero_std_group_frac", [0.9]))[0].title == "No learning signal"
    nan = health_alerts(_points("loss/policy", [0.1, math.nan]))
    assert nan[0].level == "error"
    assert nan[0].step == 2
    assert "Non-finite loss" in render_alerts(nan)
    assert render_alerts([]) == ""


def test_merge_points_replaces_resent_steps_and_sorts() -> None:
    old = _points("reward/mean", [0.1, 0.2])
    new = [MetricPoint(step=2, values={"reward/mean": 0.25}), MetricPoint(step=3, values={"reward/mean": 0.3})]
    merged = merge_points(old, new)
    assert [p.step for p in merged] == [1, 2, 3]
    assert merged[1].values["reward/mean"] == 0.25


def test_metrics_figure_draws_present_series_and_gaps_for_nan() -> None:
    points = [
        MetricPoint(step=1, values={"reward/mean": 0.1, "loss/kl": math.nan}),
        MetricPoint(step=2, values={"reward/mean": 0.4, "loss/kl": 0.02}),
    ]
    fig = metrics_figure(points)
    names = {t.name: t for t in fig.data}
    assert list(names["reward/mean"].y) == [0.1, 0.4]
    assert list(names["loss/kl"].y) == [None, 0.02]
    assert "rollout/tool_calls_per_traj" not in names


def test_evaluation_rows_and_figure_beside_paper() -> None:
    evaluation = EvaluationPublic(
        run_id=7, results=REPORT, created_at=None, reference=REFERENCE, reference_source="Agent-R1"
    )
    rows = report_rows(evaluation)
    assert rows[0][:3] == ["#7", "naive-rag", "hotpotqa"]
    assert rows[0][5] == "0.200"
    assert rows[0][7] == "0.192"
    assert rows[1][2] == "average"
    fig = evaluation_figure([evaluation])
    assert [t.name for t in fig.data] == ["run #7 · naive-rag", "paper · Naive RAG"]
    assert list(fig.data[1].y) == pytest.approx([0.1916, 0.1792, 0.0277])


def test_run_rows_and_card() -> None:
    run = make_run(3, status="failed", error="CUDA out of memory")
    assert run_rows([run])[0][3] == "❌ failed"
    assert "**Error:** CUDA out of memory" in run_card(run)
    assert format_duration(95) == "1m 35s"
    assert format_duration(None) == "–"
    assert format_duration(7300) == "2h 01m"


def test_loss_curves_skip_steps_without_an_optimizer_step() -> None:
    from app.render.metrics import series

    points = [
        MetricPoint(step=1, values={"loss/entropy": 0.4, "reward/mean": 0.2, "train/optimizer_steps": 2.0}),
        MetricPoint(step=2, values={"loss/entropy": 0.0, "reward/mean": 0.5, "train/optimizer_steps": 0.0}),
        MetricPoint(step=3, values={"loss/entropy": 0.3, "reward/mean": 0.6}),  # a run logged before the key existed
    ]
    assert series(points, "loss/entropy") == ([1, 3], [0.4, 0.3])
    assert series(points, "reward/mean") == ([1, 2, 3], [0.2, 0.5, 0.6])
