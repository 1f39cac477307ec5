"""Evaluation reports: one row per dataset and method plus the average, with the paper's numbers alongside.

The reference is Agent-R1 Table 3 (Qwen2.5-3B-Instruct, exact match). Its
"EM" is the cover-EM of our metrics (gold contained in the answer), so the
paper column sits next to `cover_em`. Output: JSON, Markdown and predictions JSONL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worker.rl.evaluation.paper import agent_r1_table
from worker.rl.evaluation.results import EvalResult

_TABLE = agent_r1_table()
DATASET_ORDER: tuple[str, ...] = _TABLE.datasets
PAPER_MODEL = _TABLE.model
PAPER_EM: dict[str, dict[str, float]] = _TABLE.exact_match
"""Agent-R1, Table 3: exact match per dataset (`agent_r1_table3.json`)."""
METHOD_TO_PAPER: dict[str, str | None] = {
    "direct": None,
    "naive-rag": "Naive RAG",
    "base-tool-call": "Base Tool Call",
    "agent": "GRPO",
}
"""Which paper row each method is compared with (`agent` follows the training algorithm; GRPO by default)."""


def paper_row(method: str, agent_algorithm: str = "GRPO") -> str | None:
    """The paper's row name for a method; for `agent`, the row of the algorithm it was trained with."""
    if method == "agent":
        if agent_algorithm not in PAPER_EM:
            raise ValueError(f"agent_algorithm must be one of {', '.join(PAPER_EM)}, got {agent_algorithm!r}")
        return agent_algorithm
    return METHOD_TO_PAPER.get(method)


def _paper_value(row: str | None, dataset: str) -> float | None:
    return PAPER_EM.get(row or "", {}).get(dataset)


def _paper_average(row: str | None, datasets: Sequence[str]) -> float | None:
    values = [_paper_value(row, d) for d in datasets]
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def build_report(results: Sequence[EvalResult], *, agent_algorithm: str = "GRPO", model: str = "") -> dict[str, Any]:
    """A JSON-ready report: per method, its dataset rows, the average and the paper's EM."""
    methods = []
    for result in results:
        row = paper_row(result.method, agent_algorithm)
        names = [m.dataset for m in result.metrics]
        rows = [{**m.to_dict(), "paper_em": _paper_value(row, m.dataset)} for m in result.metrics]
        average = {**result.average(), "paper_em": _paper_average(row, names)}
        methods.append(
            {
                "method": result.method,
                "paper_row": row,
                "seed": result.seed,
                "wall_s": result.wall_s,
                "datasets": rows,
                "average": average,
            }
        )
    return {"model": model, "paper_model": PAPER_MODEL, "paper": _TABLE.paper, "methods": methods}


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """Header plus one row per (method, dataset) and one average row per method, as strings."""
    header = ["Method", "Dataset", "n", "EM", "cover-EM", "F1", "Paper EM", "Turns", "Tool calls", "Recall", "ex/s"]
    rows = [header]
    for method in report["methods"]:
        name = method["method"]
        for d in method["datasets"]:
            scores = [_fmt(d["em"]), _fmt(d["cover_em"]), _fmt(d["f1"]), _fmt(d["paper_em"])]
            shape = [_fmt(d["avg_turns"], 2), _fmt(d["avg_tool_calls"], 2), _fmt(d["retrieval_recall"], 3)]
            rows.append([name, d["dataset"], str(d["n"]), *scores, *shape, _fmt(d["examples_per_s"], 3)])
        avg = method["average"]
        scores = [_fmt(avg["em"]), _fmt(avg["cover_em"]), _fmt(avg["f1"]), _fmt(avg["paper_em"])]
        rows.append([name, "average", "", *scores, "", "", "", ""])
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table with a note on what the paper column is."""
    rows = table_rows(report)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    mapping = ", ".join(f"{m['method']} → {m['paper_row'] or 'none'}" for m in report["methods"])
    note = (
        f"\nModel: {report['model'] or 'n/a'}. Paper EM: {report['paper']}, {report['paper_model']} "
        f"(its EM is the cover-EM here). Rows compared: {mapping}."
    )
    return "\n".join(lines) + "\n" + note + "\n"


def write_report(
    results: Sequence[EvalResult], output_dir: Path, *, agent_algorithm: str = "GRPO", model: str = ""
) -> dict[str, Path]:
    """Write `report.json`, `report.md` and `predictions_<method>.jsonl`; return their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(results, agent_algorithm=agent_algorithm, model=model)
    paths = {"json": output_dir / "report.json", "markdown": output_dir / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    for result in results:
        path = output_dir / f"predictions_{result.method}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for prediction in result.predictions:
                fh.write(json.dumps(prediction.to_dict(), ensure_ascii=False) + "\n")
        paths[f"predictions_{result.method}"] = path
    return paths
