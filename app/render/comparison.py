"""A comparison → its grouped bar chart and the side-by-side predictions of two of its rows.

The table itself comes formatted from the API (`ComparisonPublic.table`, built by the one comparison
table builder); here are only the views over it: bars per dataset for every row plus the paper's rows
(hatched), and two rows' answers paired by example, with the trajectory ids that open their replays.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from backend.schemas.comparison import ComparisonExample, ComparisonPublic

METRIC_LABELS: dict[str, str] = {"cover_em": "cover-EM (the paper's EM)", "em": "EM", "f1": "F1"}
SIDE_HEADERS: list[str] = ["Dataset", "Question", "Gold"]
"""The fixed columns of the side-by-side table; each of the two rows adds prediction, EM, F1, trajectory."""


def comparison_figure(comparison: ComparisonPublic, *, metric: str = "cover_em") -> go.Figure:
    """Grouped bars: x = datasets and the average, one bar per row, then the paper rows they map to."""
    xs = [*comparison.datasets, "average"]
    fig = go.Figure()
    for row in comparison.rows:
        scores = row.get("scores") or {}
        ys = [(scores.get(d) or {}).get(metric) for d in xs]
        fig.add_trace(go.Bar(name=str(row.get("label")), x=xs, y=ys))
    paper_rows = list(dict.fromkeys(str(r["paper_row"]) for r in comparison.rows if r.get("paper_row")))
    for name in paper_rows:
        values = comparison.reference.get(name) or {}
        if not values:
            continue
        known = [values[d] for d in xs if d in values]
        ys_paper = [values.get(d) for d in xs[:-1]] + [sum(known) / len(known) if len(known) == len(xs) - 1 else None]
        fig.add_trace(go.Bar(name=f"paper · {name}", x=xs, y=ys_paper, marker={"pattern": {"shape": "/"}}, opacity=0.6))
    fig.update_layout(
        barmode="group",
        yaxis={"title": METRIC_LABELS.get(metric, metric), "range": [0, 1]},
        height=440,
        title=f"{comparison.name} · paper: {comparison.reference_source}",
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


def example_labels(comparison: ComparisonPublic) -> list[str]:
    """The rows that have per-example predictions, in table order."""
    return list(dict.fromkeys(e.label for e in comparison.examples))


def side_by_side_headers(label_a: str, label_b: str) -> list[str]:
    cols = list(SIDE_HEADERS)
    for label in (label_a, label_b):
        cols += [f"{label}: prediction", f"{label}: EM", f"{label}: F1", f"{label}: trajectory"]
    return cols


def _cells(example: ComparisonExample | None) -> list[str]:
    if example is None:
        return ["(not evaluated)", "", "", ""]
    traj = str(example.trajectory_id) if example.trajectory_id is not None else "–"
    return [example.prediction, f"{example.em:.0f}", f"{example.f1:.3f}", traj]


def side_by_side_rows(examples: Sequence[ComparisonExample], label_a: str, label_b: str) -> list[list[str]]:
    """One row per example either row answered, paired by (dataset, task id), in the first row's order."""
    by_key: dict[tuple[str, str], dict[str, ComparisonExample]] = {}
    for ex in examples:
        if ex.label in (label_a, label_b):
            by_key.setdefault((ex.dataset, ex.task_id), {})[ex.label] = ex
    rows = []
    for (dataset, _task), pair in by_key.items():
        first = pair.get(label_a) or pair[label_b]
        rows.append(
            [dataset, first.question, " | ".join(first.gold), *_cells(pair.get(label_a)), *_cells(pair.get(label_b))]
        )
    return rows


def trajectory_columns(label_a: str, label_b: str) -> tuple[int, int]:
    """Column indexes of the two trajectory-id columns of `side_by_side_headers`."""
    headers = side_by_side_headers(label_a, label_b)
    return headers.index(f"{label_a}: trajectory"), len(headers) - 1
