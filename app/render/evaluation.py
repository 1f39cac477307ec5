"""Evaluation results → a table and a grouped bar chart beside the Agent-R1 paper's numbers.

`results` is the report the eval worker stores (`{"model", "methods": [{"method",
"paper_row", "datasets": [{dataset, n, em, cover_em, f1, ...}], "average"}]}`).
The paper's "EM" is our cover-EM, so bars compare cover-EM with the paper column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from backend.schemas.run import EvaluationPublic

DATASETS: tuple[str, ...] = ("hotpotqa", "2wiki", "musique")
TABLE_HEADERS: list[str] = [
    "Run",
    "Method",
    "Dataset",
    "n",
    "EM",
    "Cover-EM",
    "F1",
    "Paper EM",
    "Turns",
    "Tool calls",
    "Recall",
]


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def method_blocks(results: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The per-method sections of a report (empty for None or an unknown shape)."""
    if not results:
        return []
    methods = results.get("methods")
    return [m for m in methods if isinstance(m, Mapping)] if isinstance(methods, list) else []


def report_rows(evaluation: EvaluationPublic) -> list[list[str]]:
    """One row per (method, dataset), then the method's average row."""
    rows: list[list[str]] = []
    for block in method_blocks(evaluation.results):
        method = str(block.get("method", "?"))
        for d in block.get("datasets") or []:
            rows.append(
                [
                    f"#{evaluation.run_id}",
                    method,
                    str(d.get("dataset")),
                    str(d.get("n", "")),
                    _num(d.get("em")),
                    _num(d.get("cover_em")),
                    _num(d.get("f1")),
                    _num(d.get("paper_em")),
                    _num(d.get("avg_turns"), 2),
                    _num(d.get("avg_tool_calls"), 2),
                    _num(d.get("retrieval_recall")),
                ]
            )
        avg = block.get("average") or {}
        if avg:
            rows.append(
                [
                    f"#{evaluation.run_id}",
                    method,
                    "average",
                    "",
                    _num(avg.get("em")),
                    _num(avg.get("cover_em")),
                    _num(avg.get("f1")),
                    _num(avg.get("paper_em")),
                    "",
                    "",
                    "",
                ]
            )
    return rows


def _paper_rows(evaluations: Sequence[EvaluationPublic]) -> list[str]:
    """The paper rows the shown methods map to; the two baselines and GRPO when none is named."""
    named = [str(b["paper_row"]) for e in evaluations for b in method_blocks(e.results) if b.get("paper_row")]
    return list(dict.fromkeys(named)) or ["Base Tool Call", "Naive RAG", "GRPO"]


def evaluation_figure(evaluations: Sequence[EvaluationPublic], *, metric: str = "cover_em") -> go.Figure:
    """Bars per dataset: each (run, method) of ours, then the paper's rows (hatched)."""
    fig = go.Figure()
    for evaluation in evaluations:
        for block in method_blocks(evaluation.results):
            by_dataset = {str(d.get("dataset")): d.get(metric) for d in block.get("datasets") or []}
            xs = [d for d in DATASETS if d in by_dataset] + [d for d in by_dataset if d not in DATASETS]
            fig.add_trace(
                go.Bar(name=f"run #{evaluation.run_id} · {block.get('method')}", x=xs, y=[by_dataset[d] for d in xs])
            )
    reference = evaluations[0].reference if evaluations else {}
    for row in _paper_rows(evaluations):
        values = reference.get(row)
        if values:
            xs = [d for d in DATASETS if d in values]
            fig.add_trace(
                go.Bar(
                    name=f"paper · {row}",
                    x=xs,
                    y=[values[d] for d in xs],
                    marker={"pattern": {"shape": "/"}},
                    opacity=0.6,
                )
            )
    source = evaluations[0].reference_source if evaluations else ""
    label = "cover-EM (the paper's EM)" if metric == "cover_em" else metric
    fig.update_layout(
        barmode="group",
        yaxis={"title": label, "range": [0, 1]},
        height=420,
        title=f"Ours vs {source}" if source else None,
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


def has_results(evaluation: EvaluationPublic) -> bool:
    return bool(method_blocks(evaluation.results))
