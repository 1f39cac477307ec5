"""Tools tab: write a tool as a typed Python function, see its derived schema, try a call.

A trial call is queued on a worker (`POST /tools/{id}/test`); a `gr.Timer`
polls the returned run until it has a result, duration or error.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.tabs.common import error_markdown, parse_json_object, poll_job_run
from backend.schemas.run import RunPublic
from backend.schemas.tool import ToolCreate, ToolPublic, ToolUpdate

EXAMPLE_SOURCE = '''def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text whose words are counted.
    """
    return len(text.split())
'''
EXAMPLE_ARGUMENTS = '{"text": "multi-turn agents call tools"}'
VERSION_HEADERS = ["Version", "Saved", "Schema name"]


@dataclass(frozen=True)
class ToolsTab:
    """Component handles of the Tools tab."""

    picker: gr.Dropdown
    new: gr.Button
    name: gr.Textbox
    description: gr.Textbox
    source: gr.Code
    save: gr.Button
    schema: gr.JSON
    versions: gr.Dataframe
    arguments: gr.Code
    test: gr.Button
    test_status: gr.Markdown
    test_result: gr.JSON
    status: gr.Markdown
    tool_id: gr.State
    test_run_id: gr.State
    timer: gr.Timer


def _choices(tools: list[ToolPublic]) -> list[tuple[str, int]]:
    return [(f"{t.name} (v{t.version}, {t.kind})", t.id) for t in tools]


def refresh_tools(client: StudioClient) -> tuple[dict[str, Any], str]:
    """Dropdown choices of saved tools, and an empty-state hint when there are none."""
    try:
        tools = client.list_tools()
    except StudioAPIError as exc:
        return gr.update(), error_markdown(exc)
    hint = "" if tools else "No tools yet: edit the example below and press **Save tool**, then try a call."
    return gr.update(choices=_choices(tools)), hint


def _version_rows(client: StudioClient, tool_id: int) -> list[list[str]]:
    versions = client.list_tool_versions(tool_id)
    return [
        [str(v.version), v.created_at.strftime("%Y-%m-%d %H:%M"), str(v.tool_schema.get("name", ""))]
        for v in sorted(versions, key=lambda v: -v.version)
    ]


def load_tool(client: StudioClient, tool_id: int | None) -> tuple[Any, ...]:
    """Fill the editor from a saved tool: (tool_id, name, description, source, schema, versions, status)."""
    if tool_id is None:
        return None, "", "", EXAMPLE_SOURCE, {}, [], ""
    try:
        tool = client.get_tool(int(tool_id))
        rows = _version_rows(client, tool.id)
    except StudioAPIError as exc:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), error_markdown(exc)
    status = f"Loaded **{tool.name}** v{tool.version}."
    return tool.id, tool.name, tool.description, tool.source, tool.tool_schema, rows, status


def save_tool(client: StudioClient, tool_id: int | None, name: str, description: str, source: str) -> tuple[Any, ...]:
    """Create (no id yet) or update; returns (picker, tool_id, schema, versions, status)."""
    try:
        if tool_id is None:
            tool = client.create_tool(ToolCreate(name=name.strip(), description=description, source=source))
        else:
            update = ToolUpdate(name=name.strip() or None, description=description, source=source)
            tool = client.update_tool(int(tool_id), update)
        rows = _version_rows(client, tool.id)
        choices = _choices(client.list_tools())
    except (StudioAPIError, ValueError) as exc:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), error_markdown(exc)
    status = f"✅ Saved **{tool.name}** as version {tool.version}. The schema below is what the model will see."
    return gr.update(choices=choices, value=tool.id), tool.id, tool.tool_schema, rows, status


def new_tool() -> tuple[Any, ...]:
    """Clear the editor: (picker, tool_id, name, description, source, schema, versions, status)."""
    return gr.update(value=None), None, "", "", EXAMPLE_SOURCE, {}, [], "Editing a new tool (not saved yet)."


def start_tool_test(client: StudioClient, tool_id: int | None, arguments_text: str) -> tuple[Any, ...]:
    """Queue a trial call: (test_run_id, status, result, timer)."""
    if tool_id is None:
        return None, error_markdown(ValueError("save the tool first, then try a call")), None, gr.Timer(active=False)
    try:
        arguments = parse_json_object(arguments_text, "arguments")
        run = client.test_tool(int(tool_id), arguments)
    except (StudioAPIError, ValueError) as exc:
        return None, error_markdown(exc), None, gr.Timer(active=False)
    return run.id, f"⏳ Trial call queued as run #{run.id}; waiting for a worker…", None, gr.Timer(active=True)


def poll_tool_test(client: StudioClient, run_id: int | None) -> tuple[Any, ...]:
    """One poll of the trial run: (status, result, timer); the timer stops once the run finished."""
    polled = poll_job_run(client, run_id, lambda run: f"⏳ Trial call run #{run.id} is {run.status}…")
    if not isinstance(polled, RunPublic):
        return polled
    run = polled
    result = run.result or {}
    duration = result.get("duration_s")
    took = f" in {duration * 1000:.0f} ms" if isinstance(duration, int | float) else ""
    if run.status == "succeeded":
        status = f"✅ Returned{took}: `{json.dumps(result.get('result'), ensure_ascii=False)[:300]}`"
    else:
        status = f"❌ The call failed{took}: {run.error or result.get('error') or run.status}"
    return status, result, gr.Timer(active=False)


def build_tools_tab(client: StudioClient, *, poll_interval_s: float = 1.0) -> ToolsTab:
    """Lay out the tab and wire its events (call inside a `gr.Tab`)."""
    gr.Markdown(
        "Write a tool as **one typed Python function with a Google-style docstring**. The JSON schema the "
        "model sees is derived from it; trial calls run sandboxed on a worker."
    )
    status = gr.Markdown(elem_id="tools-status")
    with gr.Row():
        picker = gr.Dropdown(label="Saved tools", choices=[], value=None, scale=3)
        new = gr.Button("New tool", scale=1)
    with gr.Row():
        with gr.Column(scale=3):
            name = gr.Textbox(label="Name", placeholder="word_count", elem_id="tool-name")
            description = gr.Textbox(label="Description (optional; the docstring is used otherwise)")
            source = gr.Code(value=EXAMPLE_SOURCE, language="python", label="Source", lines=14, elem_id="tool-source")
            save = gr.Button("Save tool", variant="primary", elem_id="tool-save")
        with gr.Column(scale=2):
            schema = gr.JSON(label="Derived schema (what the model sees)")
            versions = gr.Dataframe(headers=VERSION_HEADERS, label="Saved versions", interactive=False)
    gr.Markdown("#### Try a call")
    with gr.Row():
        arguments = gr.Code(
            value=EXAMPLE_ARGUMENTS,
            language="json",
            label="Arguments (JSON)",
            lines=4,
            scale=3,
            elem_id="tool-test-args",
        )
        test = gr.Button("Run trial call", scale=1, elem_id="tool-test")
    test_status = gr.Markdown(elem_id="tool-test-status")
    test_result = gr.JSON(label="Result, duration, stdout/stderr")
    tool_id, test_run_id = gr.State(None), gr.State(None)
    timer = gr.Timer(poll_interval_s, active=False)
    tab = ToolsTab(
        picker,
        new,
        name,
        description,
        source,
        save,
        schema,
        versions,
        arguments,
        test,
        test_status,
        test_result,
        status,
        tool_id,
        test_run_id,
        timer,
    )
    _wire(tab, client)
    return tab


def _wire(tab: ToolsTab, client: StudioClient) -> None:
    loaded = [tab.tool_id, tab.name, tab.description, tab.source, tab.schema, tab.versions, tab.status]
    tab.picker.input(functools.partial(load_tool, client), [tab.picker], loaded, api_name="load_tool")
    tab.save.click(
        functools.partial(save_tool, client),
        [tab.tool_id, tab.name, tab.description, tab.source],
        [tab.picker, tab.tool_id, tab.schema, tab.versions, tab.status],
        api_name="save_tool",
    )
    tab.test.click(
        functools.partial(start_tool_test, client),
        [tab.tool_id, tab.arguments],
        [tab.test_run_id, tab.test_status, tab.test_result, tab.timer],
        api_name="test_tool",
    )
    tab.timer.tick(
        functools.partial(poll_tool_test, client),
        [tab.test_run_id],
        [tab.test_status, tab.test_result, tab.timer],
        api_visibility="private",
    )
    tab.new.click(new_tool, None, [tab.picker, *loaded], api_visibility="private")
