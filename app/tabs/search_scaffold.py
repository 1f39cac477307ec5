"""The search settings an evaluation's rows share, as one set of controls for both Evaluate sections.

Retriever, passages per search and characters kept of each passage reach the eval job through
`EvalSpec` / `ComparisonCreate` (the same fields `studio eval --retriever` and the API set); the defaults
shown are the schema's own, so the form and the API cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.tabs.common import parse_optional_int
from backend.schemas.evaluation import EvalSpec
from worker.rl.vocab import RETRIEVERS

TOP_K = EvalSpec.model_fields["top_k"]
PASSAGE_CHARS = EvalSpec.model_fields["max_passage_chars"]
FORCED_SEARCHES = EvalSpec.model_fields["forced_search_turns"]


def _bounds(field: Any) -> tuple[int, int]:
    low = next(m.ge for m in field.metadata if getattr(m, "ge", None) is not None)
    high = next(m.le for m in field.metadata if getattr(m, "le", None) is not None)
    return int(low), int(high)


@dataclass(frozen=True)
class SearchControls:
    """Component handles; `inputs` in the order `search_fields` takes them."""

    retriever: gr.Dropdown
    top_k: gr.Number
    max_passage_chars: gr.Number

    @property
    def inputs(self) -> list[Any]:
        return [self.retriever, self.top_k, self.max_passage_chars]


def search_controls(elem_prefix: str) -> SearchControls:
    """Lay out the three controls in one row (call inside a Blocks context)."""
    with gr.Row():
        retriever = gr.Dropdown(
            list(RETRIEVERS),
            value=EvalSpec.model_fields["retriever"].default,
            label="Retriever",
            info="bm25, or dense (the bundled all-MiniLM-L6-v2; index built once per corpus, cached)",
            elem_id=f"{elem_prefix}-retriever",
        )
        top_k = gr.Number(
            TOP_K.default, label="Passages per search (top-k)", precision=0, elem_id=f"{elem_prefix}-top-k"
        )
        chars = gr.Number(
            PASSAGE_CHARS.default,
            label="Characters kept of each passage",
            precision=0,
            elem_id=f"{elem_prefix}-passage-chars",
        )
    return SearchControls(retriever, top_k, chars)


def search_fields(retriever: Any, top_k: Any, max_passage_chars: Any) -> dict[str, Any]:
    """The form's values as spec fields; a ValueError naming the field and its valid range otherwise."""
    name = str(retriever or EvalSpec.model_fields["retriever"].default)
    if name not in RETRIEVERS:
        raise ValueError(f"retriever must be one of {', '.join(RETRIEVERS)}, got {name!r}")
    fields: dict[str, Any] = {"retriever": name}
    for key, field, label, value in (
        ("top_k", TOP_K, "passages per search (top-k)", top_k),
        ("max_passage_chars", PASSAGE_CHARS, "characters kept of each passage", max_passage_chars),
    ):
        number = parse_optional_int(value, label)
        low, high = _bounds(field)
        if number is None:
            number = int(field.default)
        if not low <= number <= high:
            raise ValueError(f"{label} must be between {low} and {high}, got {number}")
        fields[key] = number
    return fields


def forced_searches_control(elem_prefix: str) -> gr.Number:
    """How many leading turns open a search call when the first search is forced (the recipe's
    `task.forced_search_turns`; 2 = search, search again, then answer)."""
    return gr.Number(
        FORCED_SEARCHES.default,
        label="Forced searches (leading turns)",
        info="With the forced first search: 2 makes every row search twice before it may answer",
        precision=0,
        elem_id=f"{elem_prefix}-forced-searches",
    )


def forced_search_turns_field(value: Any) -> int:
    """The control's value as `forced_search_turns`; a ValueError naming its valid range otherwise."""
    number = parse_optional_int(value, "forced searches")
    low, high = _bounds(FORCED_SEARCHES)
    number = int(FORCED_SEARCHES.default) if number is None else number
    if not low <= number <= high:
        raise ValueError(f"forced searches must be between {low} and {high}, got {number}")
    return number
