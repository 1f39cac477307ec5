"""The tool-aware chat template: ChatML with Hermes-style tool use, rendered to token ids.

Our own template lists tool schemas in the system turn inside `<tools></tools>`
and sends tool results back as a `user` turn of `<tool_response>` blocks
(the Qwen2.5/Hermes convention). A tokenizer whose own chat template knows
tools is used instead (see `ChatFormat`). Pieces are returned per message so
the rollout can record each message's token span.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from worker.rl.generation.base import Tokenizer
from worker.rl.types import JSONValue, Message

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
STOP_STRINGS: tuple[str, ...] = ("</tool_call>", "</answer>")

TOOLS_PREAMBLE = (
    "# Tools\n\nYou can call functions to help with the user's request. "
    "Their signatures are listed inside <tools></tools>:\n<tools>\n{tools}\n</tools>\n\n"
    "To call a function, write a JSON object with its name and arguments between "
    "<tool_call></tool_call> tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)

_PROBE_USER = "Question?"
_PROBE_REPLY = "Reply."


def _turn(role: str, content: str) -> str:
    return f"{IM_START}{role}\n{content}{IM_END}\n"


class ChatFormat:
    """Renders conversations to ids for one tokenizer.

    `use_model_template`: None = use the tokenizer's own chat template when it
    mentions "tools", True = require it, False = always our ChatML template.
    With the model's template, observation and close ids are text differences
    between two renderings of a probe conversation (history with and without
    the new messages), so they match what the template would produce in context;
    per-message spans are then not separable and the whole piece goes to the
    first message.
    """

    def __init__(self, tokenizer: Tokenizer, use_model_template: bool | None = None) -> None:
        self.tokenizer = tokenizer
        template = getattr(tokenizer, "chat_template", None)
        has_tools = isinstance(template, str) and "tools" in template
        if use_model_template and not has_tools:
            raise ValueError("use_model_template=True needs a tokenizer whose chat_template supports tools")
        self.uses_model_template = bool(has_tools and use_model_template is not False)
        self.stop_strings: tuple[str, ...] = STOP_STRINGS
        self._close_text = self._model_close_text() if self.uses_model_template else f"{IM_END}\n"
        self.eos_ids: tuple[int, ...] = self._eos_ids()

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def _eos_ids(self) -> tuple[int, ...]:
        ids: list[int] = []
        im_end = self._encode(IM_END)
        if len(im_end) == 1:
            ids.append(im_end[0])
        eos = self.tokenizer.eos_token_id
        if eos is not None and eos not in ids:
            ids.append(eos)
        return tuple(ids)

    # -- our ChatML + Hermes template ---------------------------------------------------------

    @staticmethod
    def system_text(content: str, tool_schemas: Sequence[Mapping[str, JSONValue]]) -> str:
        """System content with the tool block appended (when there are tools)."""
        if not tool_schemas:
            return content
        tools = "\n".join(json.dumps(s, ensure_ascii=False) for s in tool_schemas)
        preamble = TOOLS_PREAMBLE.format(tools=tools)
        return f"{content}\n\n{preamble}" if content else preamble

    @staticmethod
    def _pieces(messages: Sequence[Message]) -> list[str]:
        """One text per message; consecutive tool messages share one user turn."""
        pieces: list[str] = []
        for i, msg in enumerate(messages):
            if msg.role != "tool":
                pieces.append(_turn(msg.role, msg.content))
                continue
            first = i == 0 or messages[i - 1].role != "tool"
            last = i == len(messages) - 1 or messages[i + 1].role != "tool"
            opening = f"{IM_START}user\n" if first else "\n"
            closing = f"{IM_END}\n" if last else ""
            pieces.append(f"{opening}<tool_response>\n{msg.content}\n</tool_response>{closing}")
        return pieces

    # -- model template -----------------------------------------------------------------------

    def _render_model(self, messages: Sequence[Message], tools: Any, generation_prompt: bool) -> str:
        dicts = [m.to_dict() for m in messages]
        text = self.tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            dicts, tools=tools or None, tokenize=False, add_generation_prompt=generation_prompt
        )
        return str(text)

    def _model_difference(self, history: Sequence[Message], new: Sequence[Message], generation_prompt: bool) -> str:
        before = self._render_model(history, None, False)
        after = self._render_model([*history, *new], None, generation_prompt)
        if not after.startswith(before):
            raise ValueError("the tokenizer's chat template does not render conversations prefix-stably")
        return after[len(before) :]

    def _model_close_text(self) -> str:
        user = Message("user", _PROBE_USER)
        header = self._render_model([user], None, True)
        full = self._render_model([user, Message("assistant", _PROBE_REPLY)], None, False)
        start = len(header) + len(_PROBE_REPLY)
        if not full.startswith(header) or full[len(header) : start] != _PROBE_REPLY:
            raise ValueError("cannot locate the assistant close in the tokenizer's chat template")
        return full[start:]

    # -- public API ---------------------------------------------------------------------------

    def prompt_parts(
        self, messages: Sequence[Message], tool_schemas: Sequence[Mapping[str, JSONValue]]
    ) -> list[list[int]]:
        """Ids per message, then the assistant header, for the initial prompt."""
        if self.uses_model_template:
            text = self._render_model(messages, list(tool_schemas), True)
            return [self._encode(text)] + [[] for _ in messages]
        rendered = list(messages)
        if tool_schemas:
            if rendered and rendered[0].role == "system":
                rendered[0] = Message("system", self.system_text(rendered[0].content, tool_schemas))
            else:
                rendered.insert(0, Message("system", self.system_text("", tool_schemas)))
        pieces = [self._encode(p) for p in self._pieces(rendered)]
        if len(rendered) > len(messages):  # the synthesized system turn belongs to the first message
            pieces = [pieces[0] + pieces[1], *pieces[2:]] if len(pieces) > 1 else pieces
        return [*pieces, self._encode(f"{IM_START}assistant\n")]

    def prompt_ids(self, messages: Sequence[Message], tool_schemas: Sequence[Mapping[str, JSONValue]]) -> list[int]:
        """The whole initial prompt, ending with the assistant header."""
        return [t for part in self.prompt_parts(messages, tool_schemas) for t in part]

    def observation_parts(self, messages: Sequence[Message]) -> list[list[int]]:
        """Ids per observation message (tool results or a user nudge), then the next assistant header."""
        if self.uses_model_template:
            history = [Message("user", _PROBE_USER), Message("assistant", _PROBE_REPLY)]
            text = self._model_difference(history, messages, generation_prompt=True)
            return [self._encode(text)] + [[] for _ in messages]
        return [self._encode(p) for p in self._pieces(messages)] + [self._encode(f"{IM_START}assistant\n")]

    def observation_ids(self, messages: Sequence[Message]) -> list[int]:
        """The tool turn plus the next assistant header."""
        return [t for part in self.observation_parts(messages) for t in part]

    def assistant_close_ids(self) -> list[int]:
        """Closes an assistant turn the model did not close itself (`<|im_end|>\\n` in ChatML)."""
        return self._encode(self._close_text)

    def turn_close_ids(self, sampled_ids: Sequence[int]) -> list[int]:
        """What to append after a turn: the full close, or only its remainder when the model emitted EOS."""
        if sampled_ids and sampled_ids[-1] in self.eos_ids:
            eos_text = self.tokenizer.decode([sampled_ids[-1]], skip_special_tokens=False)
            if eos_text and self._close_text.startswith(eos_text):
                return self._encode(self._close_text[len(eos_text) :])
            return []
        return self.assistant_close_ids()
