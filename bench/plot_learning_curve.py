"""Plot a training run's learning curve from its `metrics.jsonl`: plotly HTML plus a static PNG.

Run from the repo root: `python -m bench.plot_learning_curve RUN_DIR [--out docs/quickstart-learning-curve]`.
Top panel: per-step train reward, answer exact match and format rate (with a moving average);
bottom panel: the held-out greedy evaluations (`eval/...` rows, at the start and the end of the run).

Several runs side by side (e.g. one per estimator): `python -m bench.plot_learning_curve RUN_A RUN_B ...
--compare --label A --label B` draws one panel per metric of `COMPARE_SERIES` (reward, answer F1, tool calls
per episode, parse-error rate) with one line per run.
The PNG goes through kaleido, which drives a Chrome; Debian's chromium is used when present.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRAIN_SERIES = (("reward/mean", "train reward"), ("reward/answer", "train answer EM"), ("reward/format_rate", "format"))
EVAL_SERIES = (("eval/mean", "held-out reward"), ("eval/answer", "held-out answer EM"))
COMPARE_SERIES = (
    ("reward/mean", "train reward"),
    ("reward/f1", "train answer F1"),
    ("rollout/tool_calls_per_traj", "tool calls per episode"),
    ("rollout/parse_error_rate", "parse-error rate (per assistant turn)"),
)
PALETTE = (
    "#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"
)  # fmt: skip


def colors(count: int) -> list[str]:
    """One colour per line, the palette repeated past its ten (a line is never dropped for want of a colour)."""
    return [PALETTE[i % len(PALETTE)] for i in range(count)]


BROWSER_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


@dataclass(frozen=True)
class Curve:
    """One named series: x = training step, y = metric value."""

    name: str
    """Legend label."""
    steps: tuple[int, ...]
    """Training steps (0 = before the first update)."""
    values: tuple[float, ...]
    """Metric values, one per step."""

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.values):
            raise ValueError(f"Curve {self.name!r}: steps and values must have equal lengths")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file, in file order (a resumed run's rewritten rows keep the last)."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist; pass a run dir that contains metrics.jsonl")
    by_step: dict[tuple[int, bool], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            is_eval_only = not any(k.startswith("reward/") for k in row)
            by_step[(int(row.get("step", 0)), is_eval_only)] = row
    return [by_step[k] for k in sorted(by_step)]


def series(rows: Sequence[dict[str, Any]], key: str, name: str) -> Curve:
    """The rows that carry `key` (non-null), as a curve."""
    points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) is not None]
    return Curve(name, tuple(p[0] for p in points), tuple(p[1] for p in points))


def moving_average(values: Sequence[float], window: int) -> tuple[float, ...]:
    """Trailing mean over up to `window` points (shorter at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1; got {window}")
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return tuple(out)


def eval_summary(rows: Sequence[dict[str, Any]]) -> str:
    """'held-out reward A -> B (EM C -> D)' from the first and last eval rows, or '' without evals."""
    reward = series(rows, "eval/mean", "")
    answer = series(rows, "eval/answer", "")
    if len(reward.values) < 2:
        return ""
    text = f"held-out greedy reward {reward.values[0]:.3f} → {reward.values[-1]:.3f}"
    if len(answer.values) >= 2:
        text += f" (answer EM {answer.values[0]:.3f} → {answer.values[-1]:.3f})"
    return text


def _add_train_traces(
    fig: Any, rows: Sequence[dict[str, Any]], window: int, train_series: Sequence[tuple[str, str]]
) -> None:
    """Raw (dotted) and moving-average (solid) train curves in the top panel."""
    import plotly.graph_objects as go

    for (key, name), color in zip(train_series, colors(len(train_series)), strict=True):
        curve = series(rows, key, name)
        if not curve.steps:
            continue
        raw = go.Scatter(
            x=curve.steps,
            y=curve.values,
            name=f"{name} (raw)",
            mode="lines",
            line={"color": color, "dash": "dot", "width": 1},
            opacity=0.5,
            showlegend=False,
        )
        smooth = go.Scatter(
            x=curve.steps,
            y=moving_average(curve.values, window),
            name=name,
            mode="lines",
            line={"color": color, "width": 2},
        )
        fig.add_trace(raw, row=1, col=1)
        fig.add_trace(smooth, row=1, col=1)


def _add_eval_traces(fig: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Held-out evaluation points, labelled with their values, in the bottom panel."""
    import plotly.graph_objects as go

    for (key, name), color, where in zip(EVAL_SERIES, PALETTE[3:], ("top center", "bottom center"), strict=False):
        curve = series(rows, key, name)
        if curve.steps:
            trace = go.Scatter(
                x=curve.steps,
                y=curve.values,
                name=name,
                mode="lines+markers+text",
                text=[f"{v:.2f}" for v in curve.values],
                textposition=where,
                line={"color": color, "width": 2},
                marker={"size": 9},
            )
            fig.add_trace(trace, row=2, col=1)


def build_figure(
    rows: Sequence[dict[str, Any]],
    title: str,
    window: int = 5,
    train_series: Sequence[tuple[str, str]] = TRAIN_SERIES,
) -> Any:
    """A plotly figure: train curves on top, held-out evaluations below (that panel only when the run has any).

    The top panel's y axis is [0, 1.1] for the default series (rates and 0/1 rewards); other series
    (e.g. a reward model's raw score) get an automatic range.
    """
    from plotly.subplots import make_subplots

    panels = 2 if any(series(rows, key, name).steps for key, name in EVAL_SERIES) else 1
    fig = make_subplots(
        rows=panels,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("training rollouts (per step, dotted = raw, solid = moving average)", "held-out, greedy")[
            :panels
        ],
    )
    _add_train_traces(fig, rows, window, train_series)
    if panels == 2:
        _add_eval_traces(fig, rows)
        fig.update_yaxes(range=[-0.02, 1.12], row=2, col=1)
    subtitle = eval_summary(rows)
    fig.update_layout(
        title={"text": f"{title}<br><sup>{subtitle}</sup>" if subtitle else title},
        template="plotly_white",
        width=1000,
        height=700 if panels == 2 else 450,
        legend={"orientation": "h", "y": -0.12 if panels == 2 else -0.2},
    )
    if tuple(train_series) == TRAIN_SERIES:
        fig.update_yaxes(range=[-0.02, 1.12], row=1, col=1)
    fig.update_xaxes(title_text="training step", row=panels, col=1)
    return fig


def build_comparison_figure(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], title: str, window: int = 5) -> Any:
    """A 2x2 plotly figure: one panel per `COMPARE_SERIES` metric, one moving-average line per (label, rows) run."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not runs:
        raise ValueError("give at least one run to compare")
    fig = make_subplots(
        rows=2,
        cols=2,
        shared_xaxes=True,
        vertical_spacing=0.1,
        horizontal_spacing=0.08,
        subplot_titles=[name for _, name in COMPARE_SERIES],
    )
    for index, (key, _name) in enumerate(COMPARE_SERIES):
        row, col = index // 2 + 1, index % 2 + 1
        for (label, rows), color in zip(runs, colors(len(runs)), strict=True):
            curve = series(rows, key, label)
            if curve.steps:
                smooth = moving_average(curve.values, window)
                line = go.Scatter(
                    x=curve.steps,
                    y=smooth,
                    name=label,
                    mode="lines",
                    legendgroup=label,
                    line={"color": color, "width": 2},
                    showlegend=index == 0,
                )
                fig.add_trace(line, row=row, col=col)
    fig.update_layout(
        title={"text": f"{title}<br><sup>moving average over {window} steps</sup>"},
        template="plotly_white",
        width=1000,
        height=700,
        legend={"orientation": "h", "y": -0.12},
    )
    fig.update_xaxes(title_text="training step", row=2, col=1)
    fig.update_xaxes(title_text="training step", row=2, col=2)
    return fig


def _ensure_browser() -> None:
    """Point kaleido/choreographer at an installed Chrome (BROWSER_PATH) unless one is already set."""
    if os.environ.get("BROWSER_PATH"):
        return
    for candidate in BROWSER_CANDIDATES:
        if Path(candidate).is_file():
            os.environ["BROWSER_PATH"] = candidate
            return
    found = shutil.which("chromium") or shutil.which("google-chrome")
    if found:
        os.environ["BROWSER_PATH"] = found


def write_outputs(fig: Any, out_stem: Path, *, png: bool = True) -> list[Path]:
    """Write `<out_stem>.html` (plotly.js loaded from its CDN, keeping the file small) and `<out_stem>.png`."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    html = out_stem.with_suffix(".html")
    fig.write_html(html, include_plotlyjs="cdn", full_html=True)
    written = [html]
    if png:
        _ensure_browser()
        image = out_stem.with_suffix(".png")
        fig.write_image(image, width=fig.layout.width or 1000, height=fig.layout.height or 700, scale=1)
        written.append(image)
    return written


def _parse_series(parser: argparse.ArgumentParser, spec: str) -> tuple[str, str]:
    key, sep, label = spec.partition("=")
    if not key.strip():
        parser.error(f"--series {spec!r}: give KEY or KEY=LABEL, e.g. reward/f1=train answer F1")
    return key.strip(), (label.strip() if sep and label.strip() else key.strip())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run_dir", type=Path, nargs="+", help="Run directory holding metrics.jsonl (several with --compare)"
    )
    parser.add_argument("--compare", action="store_true", help="One panel per metric, one line per run dir")
    parser.add_argument("--label", action="append", default=[], help="Legend label per run dir (with --compare)")
    parser.add_argument("--out", type=Path, default=Path("docs/quickstart-learning-curve"), help="Output path stem")
    parser.add_argument("--title", default="Quickstart GRPO on SmolLM2-135M (demo KB, 2-core CPU)")
    parser.add_argument("--window", type=int, default=5, help="Moving-average window in steps")
    parser.add_argument("--no-png", action="store_true", help="Write only the HTML")
    parser.add_argument(
        "--series",
        action="append",
        default=[],
        metavar="KEY=LABEL",
        help="A metrics.jsonl key for the top panel, e.g. 'reward/reward_model:2=reward model score' (repeatable; "
        "replaces the default train reward, answer EM and format)",
    )
    args = parser.parse_args(argv)
    train_series = [_parse_series(parser, spec) for spec in args.series] or list(TRAIN_SERIES)
    if args.compare:
        if args.label and len(args.label) != len(args.run_dir):
            parser.error(f"give one --label per run dir ({len(args.run_dir)}), or none; got {len(args.label)}")
        labels = args.label or [d.name for d in args.run_dir]
        runs = [(label, read_metrics(d / "metrics.jsonl")) for label, d in zip(labels, args.run_dir, strict=True)]
        fig = build_comparison_figure(runs, args.title, window=args.window)
        for path in write_outputs(fig, args.out, png=not args.no_png):
            print(f"wrote {path}")
        return
    if len(args.run_dir) != 1:
        parser.error("several run dirs need --compare")
    rows = read_metrics(args.run_dir[0] / "metrics.jsonl")
    fig = build_figure(rows, args.title, window=args.window, train_series=train_series)
    for path in write_outputs(fig, args.out, png=not args.no_png):
        print(f"wrote {path}")
    summary = eval_summary(rows)
    if summary:
        print(summary)


if __name__ == "__main__":
    main()
