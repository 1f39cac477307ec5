"""`bench.plot_learning_curve`: metrics parsing, smoothing, eval summary and the HTML figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.plot_learning_curve import (
    build_comparison_figure,
    build_figure,
    eval_summary,
    main,
    moving_average,
    read_metrics,
    series,
    write_outputs,
)


def _write(run_dir: Path, rows: list[dict[str, float]]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"step": 0, "eval/mean": 0.2, "eval/answer": 0.1},
    {"step": 1, "reward/mean": 0.1, "reward/answer": 0.0, "reward/format_rate": 1.0},
    {
        "step": 2,
        "reward/mean": 0.5,
        "reward/answer": 0.4,
        "reward/format_rate": 1.0,
        "eval/mean": 0.6,
        "eval/answer": 0.5,
    },
]


def test_read_metrics_keeps_eval_only_row_and_last_rewrite(tmp_path: Path) -> None:
    rewritten = {"step": 1, "reward/mean": 0.3, "reward/answer": 0.2, "reward/format_rate": 1.0}
    rows = read_metrics(_write(tmp_path, [*ROWS, rewritten]))
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[1]["reward/mean"] == 0.3


def test_read_metrics_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"metrics\.jsonl"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_series_skips_rows_without_the_key() -> None:
    curve = series(ROWS, "eval/mean", "held-out")
    assert curve.steps == (0, 2)
    assert curve.values == (0.2, 0.6)


def test_moving_average() -> None:
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == (1.0, 2.0, 4.0, 6.0)
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], 0)


def test_eval_summary_quotes_first_and_last() -> None:
    assert eval_summary(ROWS) == "held-out greedy reward 0.200 → 0.600 (answer EM 0.100 → 0.500)"
    assert eval_summary(ROWS[1:2]) == ""


def test_figure_and_html(tmp_path: Path) -> None:
    fig = build_figure(ROWS, "t")
    names = {trace.name for trace in fig.data}
    assert {"train reward", "held-out reward", "held-out answer EM"} <= names
    written = write_outputs(fig, tmp_path / "curve", png=False)
    assert written == [tmp_path / "curve.html"]
    assert "plotly" in written[0].read_text(encoding="utf-8").lower()


def test_comparison_figure_has_one_line_per_run_and_metric() -> None:
    rows_b = [
        {**r, "reward/f1": 0.3, "rollout/tool_calls_per_traj": 1.5, "rollout/parse_error_rate": 0.1} for r in ROWS
    ]
    fig = build_comparison_figure([("a", ROWS), ("b", rows_b)], "t", window=1)
    by_name = [trace.name for trace in fig.data]
    # run a logs only reward/mean of the four; run b logs all four
    assert by_name.count("a") == 1
    assert by_name.count("b") == 4
    assert next(t.y for t in fig.data if t.name == "b") == (0.1, 0.5)
    with pytest.raises(ValueError, match="at least one run"):
        build_comparison_figure([], "t")
    many = build_comparison_figure([(f"run{i}", rows_b) for i in range(12)], "t", window=1)  # past the palette
    assert sorted({t.name for t in many.data}) == sorted(f"run{i}" for i in range(12))
    assert len(many.data) == 12 * 4, "no run is dropped for want of a colour"


def test_series_option_plots_other_metrics_on_an_automatic_axis(tmp_path: Path) -> None:
    rows = [{"step": s, "reward/mean": 0.0, "reward/reward_model:2": 1.0 + s} for s in (1, 2, 3)]
    run = tmp_path / "run"
    _write(run, rows)
    main([str(run), "--series", "reward/reward_model:2=reward model score", "--out", str(tmp_path / "c"), "--no-png"])
    html = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "reward model score" in html
    assert "train reward" not in html  # --series replaces the default top-panel series
    fig = build_figure(rows, "t", window=1, train_series=[("reward/reward_model:2", "rm")])
    assert next(t.y for t in fig.data if t.name == "rm") == (2.0, 3.0, 4.0)
    assert fig.layout.yaxis.range is None  # not clipped to [0, 1.1] like the 0/1 rewards
    with pytest.raises(SystemExit):
        main([str(run), "--series", "=label", "--no-png"])


def test_a_run_without_held_out_rows_gets_one_panel() -> None:
    rows = [{"step": s, "reward/mean": 0.1 * s} for s in (1, 2)]
    assert len(build_figure(rows, "t").layout.annotations) == 1  # the train panel's title only
    assert len(build_figure(ROWS, "t").layout.annotations) == 2
