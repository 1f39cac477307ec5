"""The demo task's compact prompt wiring: env config and schema-free prompt for source='demo' only."""

from __future__ import annotations

from pathlib import Path

from tests.rl.conftest import ListRetriever
from worker.rl.envs.base import DEFAULT_SYSTEM_PROMPT, EnvConfig
from worker.rl.envs.from_spec import SpecEnv
from worker.rl.envs.qa import DEMO_SYSTEM_PROMPT, FORCE_FIRST_SEARCH_PREFILL, QASearchEnv
from worker.rl.generation.chat import ChatFormat
from worker.rl.training.build import env_config, make_env_factory
from worker.rl.training.config import TrainConfig, load_config, override
from worker.rl.types import Passage, Task

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.toml"


def test_demo_source_gets_compact_prompt_and_answer_prefill() -> None:
    cfg = override(TrainConfig(), ["task.source='demo'", "task.force_first_search=true", "rollout.max_turns=2"])
    env_cfg = env_config(cfg)
    assert env_cfg.system_prompt == DEMO_SYSTEM_PROMPT
    assert env_cfg.answer_prefill_after_tool == "<answer>"
    assert env_cfg.first_turn_prefill == FORCE_FIRST_SEARCH_PREFILL
    assert env_cfg.max_turns == 2


def test_file_sources_keep_the_generic_prompt() -> None:
    cfg = override(TrainConfig(), ["task.source='data/hotpot.json'"])
    env_cfg = env_config(cfg)
    assert env_cfg.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert env_cfg.answer_prefill_after_tool == ""


def test_demo_env_factory_hides_tool_schemas() -> None:
    passages = [Passage(title="Brimco Works", text="Brimco Works is a company founded by Tal Vennor.")]
    env = make_env_factory(override(TrainConfig(), ["task.source='demo'"]), passages)()
    assert isinstance(env, SpecEnv)  # presets are environment specs too (env_from_spec)
    assert env.tool_schemas == []
    assert len(env.toolset.names) == 1  # the search tool still runs


def test_hidden_schemas_shorten_the_prompt(chat: ChatFormat, retriever: ListRetriever, qa_task: Task) -> None:
    config = EnvConfig(system_prompt=DEMO_SYSTEM_PROMPT)
    shown = QASearchEnv(retriever, config=config, show_tool_schemas=True)
    hidden = QASearchEnv(retriever, config=config, show_tool_schemas=False)
    with_block = chat.prompt_ids(shown.reset(qa_task), shown.tool_schemas)
    without = chat.prompt_ids(hidden.reset(qa_task), hidden.tool_schemas)
    assert len(without) < len(with_block)
    assert "<tools>" not in chat.tokenizer.decode(without)
    assert "Brimco Works" in chat.tokenizer.decode(without)


def test_quickstart_config_loads() -> None:
    cfg = load_config(QUICKSTART)
    assert cfg.task.source == "demo"
    assert cfg.eval.num_tasks >= 50
    assert cfg.rollout.max_turns == 2
