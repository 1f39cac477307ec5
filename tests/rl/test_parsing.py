"""Hermes tool-call parsing: errors are values; answers are extracted from the last tag."""

from __future__ import annotations

import pytest

from worker.rl.tools.parsing import CALL_FORMATS, HermesFormat, extract_answer, get_call_format
from worker.rl.types import ToolCall

FMT = HermesFormat()


def test_parses_one_and_many_calls_ignoring_text_around() -> None:
    text = (
        'Let me look.\n<tool_call>{"name": "search", "arguments": {"query": "Paris"}}</tool_call>\n'
        '<tool_call>\n{"name": "calc", "arguments": {"expression": "1+1"}}\n</tool_call> done'
    )
    result = FMT.parse(text)
    assert result.error is None
    assert result.calls == (
        ToolCall("search", {"query": "Paris"}, id="call_0"),
        ToolCall("calc", {"expression": "1+1"}, id="call_1"),
    )


@pytest.mark.parametrize(
    ("text", "error_part", "n_calls"),
    [
        ('<tool_call>{"name": "search", "arguments": {"query": }</tool_call>', "not valid JSON", 0),
        ('<tool_call>{"arguments": {"query": "x"}}</tool_call>', "missing a 'name'", 0),
        ('<tool_call>{"name": "s", "arguments": [1]}</tool_call>', "'arguments' must be a JSON object", 0),
        ('<tool_call>{"name": "s", "arguments": "nope"}</tool_call>', "not a JSON object", 0),
        ('<tool_call>["s"]</tool_call>', "must be a JSON object with 'name'", 0),
        ('<tool_call>{"name": "search", "arguments": {"query": "Par', "missing </tool_call>", 0),
        ('<tool_call>{"name": "a"}</tool_call><tool_call>{bad</tool_call>', "tool call 2 is not valid JSON", 1),
        ('{"name": "a"}</tool_call>', "without a matching <tool_call>", 0),
    ],
)
def test_malformed_calls_give_error_values(text: str, error_part: str, n_calls: int) -> None:
    result = FMT.parse(text)
    assert result.error is not None
    assert error_part in result.error
    assert len(result.calls) == n_calls


def test_tolerated_irregularities_are_noted() -> None:
    unterminated = FMT.parse('<tool_call>{"name": "search", "arguments": {"query": "x"}}')
    assert unterminated.error is None
    assert unterminated.calls == (ToolCall("search", {"query": "x"}, id="call_0"),)
    assert unterminated.note is not None
    assert "missing </tool_call>" in unterminated.note
    extra = FMT.parse('<tool_call>{"name": "s", "arguments": "{\\"q\\": 1}"}}</tool_call>')
    assert extra.calls == (ToolCall("s", {"q": 1}, id="call_0"),)
    assert extra.note is not None
    assert "extra text" in extra.note


def test_no_call_is_not_an_error() -> None:
    result = FMT.parse("The answer is <answer>4</answer>")
    assert result.calls == ()
    assert result.error is None


def test_render_call_round_trips() -> None:
    call = ToolCall("search", {"query": "Eiffel Tower"}, id="call_0")
    rendered = FMT.render_call(call)
    assert rendered.startswith("<tool_call>")
    assert rendered.endswith("</tool_call>")
    assert FMT.parse(rendered).calls == (call,)
    assert FMT.stop_strings == ("</tool_call>",)


def test_registry() -> None:
    assert isinstance(get_call_format("hermes"), HermesFormat)
    assert "hermes" in CALL_FORMATS
    with pytest.raises(ValueError, match="valid names: hermes"):
        get_call_format("xml")


@pytest.mark.parametrize(
    ("text", "tag", "expected"),
    [
        ("<answer> Paris </answer>", "answer", "Paris"),
        ("<answer>a</answer> then <answer>b</answer>", "answer", "b"),
        ("<answer>unterminated", "answer", None),
        ("no tags", "answer", None),
        ("<final>42</final>", "final", "42"),
        ("<answer>multi\nline</answer>", "answer", "multi\nline"),
    ],
)
def test_extract_answer(text: str, tag: str, expected: str | None) -> None:
    assert extract_answer(text, tag) == expected
