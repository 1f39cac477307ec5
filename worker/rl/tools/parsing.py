"""Tool-call extraction from model text: parse failures are values, never exceptions.

`HermesFormat` reads `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
blocks (the Hermes/Qwen2.5 convention); formats live in a name registry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from worker.rl.types import ToolCall


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Calls that parsed, plus a model-facing error when some text could not be parsed."""

    calls: tuple[ToolCall, ...] = ()
    """Well-formed calls, in the order they appear."""
    error: str | None = None
    """What was wrong (None when everything parsed)."""
    note: str | None = None
    """Tolerated irregularities (missing close tag around valid JSON, extra text after the JSON)."""


class ToolCallFormat(Protocol):
    """How tool calls are written in model text."""

    name: str

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Strings after which generation should stop so the call can run."""
        ...

    def parse(self, text: str) -> ParseResult:
        """Extract every call from an assistant message."""
        ...

    def render_call(self, call: ToolCall) -> str:
        """Write a call the way the model should (demonstrations, warm starts)."""
        ...


def _call_from_json(obj: Any, index: int) -> ToolCall | str:
    if not isinstance(obj, dict):
        return f"tool call {index + 1} must be a JSON object with 'name' and 'arguments'"
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"tool call {index + 1} is missing a 'name' (string)"
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return f"tool call {index + 1}: 'arguments' is a string that is not a JSON object"
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return f"tool call {index + 1}: 'arguments' must be a JSON object, got {type(arguments).__name__}"
    return ToolCall(name=name.strip(), arguments=arguments, id=f"call_{index}")


class HermesFormat:
    """`<tool_call>{"name": <fn>, "arguments": <args>}</tool_call>`, one or more per message."""

    name = "hermes"
    open_tag = "<tool_call>"
    close_tag = "</tool_call>"

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return (self.close_tag,)

    def render_call(self, call: ToolCall) -> str:
        body = json.dumps({"name": call.name, "arguments": dict(call.arguments)}, ensure_ascii=False)
        return f"{self.open_tag}\n{body}\n{self.close_tag}"

    def _blocks(self, text: str) -> tuple[list[str], str | None]:
        """Bodies of closed blocks, plus the body of a trailing unterminated block (if any)."""
        pattern = re.escape(self.open_tag) + r"(.*?)" + re.escape(self.close_tag)
        bodies = [m.group(1) for m in re.finditer(pattern, text, flags=re.DOTALL)]
        tail = re.sub(pattern, "", text, flags=re.DOTALL)
        cut = tail.rfind(self.open_tag)
        return bodies, (tail[cut + len(self.open_tag) :] if cut >= 0 else None)

    def parse(self, text: str) -> ParseResult:
        bodies, unterminated = self._blocks(text)
        calls: list[ToolCall] = []
        errors: list[str] = []
        notes: list[str] = []
        items = [(b, False) for b in bodies] + ([(unterminated, True)] if unterminated is not None else [])
        for index, (body, is_open) in enumerate(items):
            stripped = body.strip()
            try:
                obj, end = json.JSONDecoder().raw_decode(stripped)
            except json.JSONDecodeError as exc:
                missing = f" and is missing {self.close_tag}" if is_open else ""
                errors.append(f"tool call {index + 1} is not valid JSON ({exc.msg} at char {exc.pos}){missing}")
                continue
            parsed = _call_from_json(obj, index)
            if isinstance(parsed, str):
                errors.append(parsed)
                continue
            calls.append(parsed)
            if stripped[end:].strip():
                notes.append(f"ignored extra text after the JSON of tool call {index + 1}")
            if is_open:
                notes.append(f"tool call {index + 1} is missing {self.close_tag}; accepted its complete JSON")
        if not items and self.close_tag in text:
            errors.append(f"found {self.close_tag} without a matching {self.open_tag}")
        return ParseResult(
            calls=tuple(calls),
            error="; ".join(errors) if errors else None,
            note="; ".join(notes) if notes else None,
        )


CALL_FORMATS: Mapping[str, Callable[[], ToolCallFormat]] = {"hermes": HermesFormat}


def get_call_format(name: str) -> ToolCallFormat:
    """A tool-call format by name; ValueError listing the valid names otherwise."""
    factory = CALL_FORMATS.get(name)
    if factory is None:
        raise ValueError(f"unknown call_format {name!r}; valid names: {', '.join(sorted(CALL_FORMATS))}")
    return factory()


def extract_answer(text: str, tag: str = "answer") -> str | None:
    """The stripped content of the last `<tag>…</tag>` in `text`, or None."""
    matches = re.findall(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, flags=re.DOTALL)
    return matches[-1].strip() if matches else None
