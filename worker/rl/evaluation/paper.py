"""The reference paper's numbers (Agent-R1 Table 3), read from `agent_r1_table3.json` beside this module.

Data, not code, and one copy of it: the evaluation report and the API's evaluation route both read it
through this stdlib-only module (import-linter keeps it a leaf, so the API process never loads torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE_FILE = Path(__file__).with_name("agent_r1_table3.json")


@dataclass(frozen=True)
class PaperTable:
    """Exact match per method row and dataset, with where it comes from."""

    source: str
    """One line naming the table, metric and model."""
    paper: str
    """The table's short name (e.g. 'Agent-R1 Table 3 (exact match)')."""
    model: str
    """The model the paper evaluated."""
    datasets: tuple[str, ...]
    """Dataset names, in the paper's column order."""
    exact_match: dict[str, dict[str, float]]
    """Method row → dataset → EM."""


@cache
def agent_r1_table() -> PaperTable:
    """The table, parsed once per process."""
    data = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    rows = {row: {d: float(v) for d, v in values.items()} for row, values in data["exact_match"].items()}
    return PaperTable(data["source"], data["paper"], data["model"], tuple(data["datasets"]), rows)
