"""Training metrics → plotly figures: one grid of the curves an RL engineer watches.

Pure: takes `MetricPoint`s (accumulated incrementally by the Runs tab through
`GET /runs/{id}/metrics?since=`), returns a `plotly` figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from backend.schemas.run import MetricPoint


@dataclass(frozen=True)
class ChartSpec:
    """One panel: a title and the metric names it plots (the first present of each alternative group)."""

    title: str
    """Panel title."""
    keys: tuple[str, ...]
    """Metric names drawn as lines in this panel."""
    prefixes: tuple[str, ...] = ()
    """Also draw every metric whose name starts with one of these (e.g. each `reward/reward_model:<id>`)."""

    def names(self, points: Sequence[MetricPoint]) -> list[str]:
        """The metric names this panel draws for these points: `keys`, then prefixed names in sorted order."""
        found = sorted({k for p in points for k in p.values if k.startswith(self.prefixes)}) if self.prefixes else []
        return [*self.keys, *(k for k in found if k not in self.keys)]


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec("Reward", ("reward/mean", "eval/mean")),
    ChartSpec("Answer score (EM)", ("reward/answer", "eval/answer")),
    ChartSpec("Format rate", ("reward/format_rate",)),
    ChartSpec("Tool calls / trajectory", ("rollout/tool_calls_per_traj",)),
    ChartSpec("Parse / tool error rate", ("rollout/parse_error_rate", "rollout/tool_error_rate")),
    ChartSpec("KL", ("loss/kl", "loss/approx_kl")),
    ChartSpec("Entropy", ("loss/entropy",)),
    ChartSpec("Step time (s)", ("perf/step_s", "perf/rollout_s", "perf/update_s")),
    # the share of prompt tokens the engine did not prefill: group prompts shared, earlier turns kept cached
    ChartSpec("Prefill saved by prefix caching", ("engine/prefill_saved_frac",)),
    # reward hacking shows as the reward model's score rising while the automatic reward does not
    ChartSpec(
        "Reward model vs automatic reward",
        ("reward/rubric",),
        prefixes=("reward/reward_model:", "reward/step_reward_model:"),
    ),
)
"""The panels, in grid order (two columns)."""


def merge_points(existing: Sequence[MetricPoint], new: Sequence[MetricPoint]) -> list[MetricPoint]:
    """Existing plus new points, one per step (a re-sent step replaces the old one), ascending."""
    by_step = {p.step: p for p in existing}
    by_step.update({p.step: p for p in new})
    return [by_step[s] for s in sorted(by_step)]


def series(points: Sequence[MetricPoint], key: str) -> tuple[list[int], list[float | None]]:
    """Steps and values of one metric (non-finite values become gaps).

    `loss/*` values of a step that took no optimizer step (`train/optimizer_steps` 0: every group had
    zero reward variance) are defaults, not measurements, and are left out rather than drawn as 0.
    """
    steps, values = [], []
    for p in points:
        if key.startswith("loss/") and p.values.get("train/optimizer_steps") == 0:
            continue
        if key in p.values:
            value = p.values[key]
            steps.append(p.step)
            values.append(value if math.isfinite(value) else None)
    return steps, values


def metrics_figure(points: Sequence[MetricPoint], *, title: str = "") -> go.Figure:
    """A grid (two columns) of the standard panels; panels without data say so."""
    rows = math.ceil(len(CHARTS) / 2)
    fig = make_subplots(rows=rows, cols=2, subplot_titles=[c.title for c in CHARTS], vertical_spacing=0.08)
    for i, chart in enumerate(CHARTS):
        row, col = i // 2 + 1, i % 2 + 1
        drawn = False
        for key in chart.names(points):
            steps, values = series(points, key)
            if steps:
                fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=key), row=row, col=col)
                drawn = True
        if not drawn:
            fig.add_annotation(
                text="no data yet", showarrow=False, row=row, col=col, x=0.5, y=0.5, xref="x domain", yref="y domain"
            )
        fig.update_xaxes(title_text="step", row=row, col=col)
    fig.update_layout(
        height=260 * rows,
        title=title or None,
        legend={"orientation": "h", "y": -0.05},
        margin={"l": 40, "r": 20, "t": 60, "b": 40},
    )
    return fig
