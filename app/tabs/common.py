"""Helpers shared by the tab modules: readable API errors, input parsing, run pickers.

Errors never surface as tracebacks: `error_markdown` shows a toast (`gr.Warning`)
and returns a Markdown line for the tab's status area.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.render.runs import is_finished
from backend.schemas.run import RunPublic

logger = logging.getLogger(__name__)


def error_markdown(exc: Exception) -> str:
    """Toast the error and return it as Markdown for a status box."""
    message = str(exc) if isinstance(exc, StudioAPIError | ValueError) else f"{exc.__class__.__name__}: {exc}"
    logger.info("shown to the user: %s", message)
    gr.Warning(message)
    return f"⚠️ **{message}**"


def parse_optional_int(value: Any, field: str) -> int | None:
    """A Number/Textbox value → int, None when empty; ValueError naming `field` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise ValueError(f"{field} must be a whole number, got {value!r}")
    return int(number)


def parse_optional_float(value: Any, field: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a number, got {value!r}") from None


def parse_json_object(text: str | None, field: str) -> dict[str, Any]:
    """A JSON object from a code box ('' → {}); ValueError with the position of a syntax error."""
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{field} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, dict):
        raise ValueError(f'{field} must be a JSON object like {{"query": "..."}}, got {type(value).__name__}')
    return value


TRI_STATE = ["any", "yes", "no"]
"""Choices of a yes/no/any filter dropdown."""


def tri_state(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "any")


def run_choices(client: StudioClient, kind: str | None = None, limit: int = 50) -> list[tuple[str, int]]:
    """`(label, id)` pairs for a run dropdown, newest first."""
    page = client.list_runs(kind=kind, limit=limit)
    return [(f"#{r.id} {r.name} ({r.kind}, {r.status})", r.id) for r in page.items]


def poll_job_run(
    client: StudioClient, run_id: int | None, pending: Callable[[RunPublic], Any]
) -> RunPublic | tuple[Any, Any, Any]:
    """One timer tick over a job run: the finished run, or the (status, result, timer) triple to return as is
    while there is none yet, it is still going (`pending(run)` is the status), or the API failed."""
    if run_id is None:
        return gr.skip(), gr.skip(), gr.Timer(active=False)
    try:
        run = client.get_run(int(run_id))
    except StudioAPIError as exc:
        return error_markdown(exc), gr.skip(), gr.Timer(active=False)
    if not is_finished(run):
        return pending(run), gr.skip(), gr.Timer(active=True)
    return run
