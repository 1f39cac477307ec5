"""Several evaluation reports (checkpoints and baselines) → one comparison table, beside the paper's rows.

A stdlib-only leaf: the API's `GET /comparisons/{id}` and `bench/table3.py` both reshape the stored
`build_report` dicts with it, so the table a reader sees in the studio and in `docs/table3/` is built once.
One row per (entry, method): EM / cover-EM / F1 per dataset and their unweighted average (the paper's
"Avg."), tool calls per question, and the paper's EM of the row it is compared with (its EM is our cover-EM).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.rl.evaluation.paper import agent_r1_table

ESTIMATOR_PAPER_ROW: dict[str, str] = {
    "grpo": "GRPO",
    "dr_grpo": "GRPO",
    "gae": "PPO",
    "rloo": "RLOO",
    "reinforce_pp": "REINFORCE++",
    "reinforce_pp_baseline": "REINFORCE++-baseline",
}
"""`algorithm.estimator` of a train run → the paper row its checkpoint is compared with."""
METRICS: tuple[str, ...] = ("em", "cover_em", "f1")


def paper_row_for_estimator(estimator: str | None) -> str:
    """The paper row of a training estimator (GRPO when unknown or not recorded)."""
    return ESTIMATOR_PAPER_ROW.get(estimator or "grpo", "GRPO")


@dataclass(frozen=True)
class ComparisonRow:
    """One method of one comparison entry, its scores per dataset and on average."""

    label: str
    """What the reader calls it: a baseline's method name, or `run #N step S (agent)`."""
    method: str
    paper_row: str | None
    scores: dict[str, dict[str, float | None]]
    """Dataset (and 'average') → {em, cover_em, f1, paper_em, n}."""
    tool_calls_per_question: float | None
    run_id: int | None = None
    """The eval run that produced it."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "method": self.method,
            "paper_row": self.paper_row,
            "scores": self.scores,
            "tool_calls_per_question": self.tool_calls_per_question,
            "run_id": self.run_id,
        }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _scores(values: Mapping[str, Any]) -> dict[str, float | None]:
    return {
        **{m: _float(values.get(m)) for m in METRICS},
        "paper_em": _float(values.get("paper_em")),
        "n": _float(values.get("n")),
    }


def method_rows(
    report: Mapping[str, Any], *, label: str | None = None, run_id: int | None = None
) -> list[ComparisonRow]:
    """The rows of one `build_report` dict (one per method block); `label` names an agent checkpoint."""
    rows = []
    for block in report.get("methods") or []:
        if not isinstance(block, Mapping):
            continue
        method = str(block.get("method", "?"))
        datasets = [d for d in block.get("datasets") or [] if isinstance(d, Mapping)]
        scores = {str(d.get("dataset")): _scores(d) for d in datasets}
        n = sum(int(d.get("n") or 0) for d in datasets)
        scores["average"] = {**_scores(block.get("average") or {}), "n": float(n)}
        calls = sum(float(d.get("avg_tool_calls") or 0.0) * int(d.get("n") or 0) for d in datasets)
        name = label if label and method == "agent" else method
        paper = block.get("paper_row")
        row = ComparisonRow(name, method, str(paper) if paper else None, scores, calls / n if n else None, run_id)
        rows.append(row)
    return rows


def dataset_order(rows: Sequence[ComparisonRow]) -> list[str]:
    """The datasets present, in the paper's column order first."""
    seen = [d for r in rows for d in r.scores if d != "average"]
    known = [d for d in agent_r1_table().datasets if d in seen]
    return known + [d for d in dict.fromkeys(seen) if d not in known]


def table_header(datasets: Sequence[str]) -> list[str]:
    cols = ["Method", "Paper row"]
    for d in [*datasets, "average"]:
        cols += [f"{d} EM", f"{d} cover-EM", f"{d} F1", f"{d} paper EM"]
    return [*cols, "Tool calls / q"]


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table_cells(rows: Sequence[ComparisonRow]) -> list[list[str]]:
    """Header plus one string row per comparison row (datasets as in `dataset_order`)."""
    datasets = dataset_order(rows)
    out = [table_header(datasets)]
    for row in rows:
        cells = [row.label, row.paper_row or "–"]
        for d in [*datasets, "average"]:
            s = row.scores.get(d, {})
            cells += [_fmt(s.get("em")), _fmt(s.get("cover_em")), _fmt(s.get("f1")), _fmt(s.get("paper_em"))]
        out.append([*cells, _fmt(row.tool_calls_per_question, 2)])
    return out


def render_markdown(rows: Sequence[ComparisonRow]) -> str:
    """The table as Markdown, with what the paper column is."""
    cells = table_cells(rows)
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    table = agent_r1_table()
    return "\n".join(lines) + f"\n\nPaper EM: {table.source} (its EM is our cover-EM).\n"
