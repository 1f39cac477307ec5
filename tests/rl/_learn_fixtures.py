"""Shared helpers for the learning-side tests: tiny random causal LMs and synthetic trajectories."""

from __future__ import annotations

import string

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from worker.rl.envs.base import EnvConfig
from worker.rl.envs.qa import QASearchEnv
from worker.rl.generation.chat import ChatFormat
from worker.rl.rewards.rubric import RewardTerm, Rubric
from worker.rl.tools.search import BM25Retriever
from worker.rl.training.build import TrainComponents
from worker.rl.types import Passage, Task, Trajectory, Turn


def tiny_llama(vocab_size: int = 64, seed: int = 0, hidden: int = 32, tie: bool = False) -> LlamaForCausalLM:
    """A 2-layer random Llama built in-process (no downloads)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=tie,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


def make_trajectory(
    prompt: list[int],
    turns: list[list[int]],
    *,
    group_id: str = "g0",
    reward: float = 1.0,
    step_rewards: tuple[float, ...] = (),
    tool_tokens: list[int] | None = None,
) -> Trajectory:
    """Prompt, then assistant turns (sampled, mask 1) separated by `tool_tokens` (mask 0)."""
    ids, mask, lps = list(prompt), [0] * len(prompt), [None] * len(prompt)
    spans: list[Turn] = []
    for k, turn in enumerate(turns):
        start = len(ids)
        ids += turn
        mask += [1] * len(turn)
        lps += [-0.5 - 0.1 * j for j in range(len(turn))]
        spans.append(Turn(role="assistant", text="", token_start=start, token_end=len(ids)))
        if tool_tokens and k < len(turns) - 1:
            tool_start = len(ids)
            ids += tool_tokens
            mask += [0] * len(tool_tokens)
            lps += [None] * len(tool_tokens)
            spans.append(Turn(role="tool", text="", token_start=tool_start, token_end=len(ids)))
    return Trajectory(
        task_id="t",
        group_id=group_id,
        token_ids=tuple(ids),
        loss_mask=tuple(mask),
        logprobs=tuple(lps),
        prompt_length=len(prompt),
        turns=tuple(spans),
        reward=reward,
        step_rewards=step_rewards,
    )


CHAR_SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One id per printable ASCII character plus the ChatML markers as single special ids."""
    vocab = {tok: i for i, tok in enumerate(CHAR_SPECIALS + list(string.printable))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )


def answer_is(expected: str) -> Rubric:
    """A rubric paying 1 when the final answer equals `expected` (plus weight-0 length metric)."""

    def correct(trajectory: Trajectory, task: Task) -> float:
        return float((trajectory.final_answer or "").strip() == expected)

    def length(trajectory: Trajectory, task: Task) -> float:
        return trajectory.response_length / 100.0

    return Rubric([RewardTerm("exact_match", correct, 1.0), RewardTerm("length", length, 0.0)])


def parity_rubric() -> Rubric:
    """Reward = share of even token ids sampled: varies under random sampling, so groups carry signal."""

    def even_share(trajectory: Trajectory, task: Task) -> float:
        ids = trajectory.sampled_token_ids()
        return sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1)

    return Rubric([RewardTerm("even_share", even_share, 1.0)])


def tiny_components(
    tokenizer: PreTrainedTokenizerFast, model: LlamaForCausalLM, generator: object, rubric: Rubric, n_tasks: int = 6
) -> TrainComponents:
    """Components for a trainer test: short prompts, an in-memory corpus, the given engine and rubric."""
    passages = [Passage(title=f"P{i}", text=f"Item {i} is red.") for i in range(n_tasks)]
    tasks = [Task(id=f"t{i}", question=f"Color of item {i}?", answers=("red",)) for i in range(n_tasks)]
    retriever = BM25Retriever.from_passages(passages)
    env_cfg = EnvConfig(max_turns=2, system_prompt="Answer in <answer></answer>.")

    def factory() -> QASearchEnv:
        return QASearchEnv(retriever, top_k=1, max_passage_chars=40, config=env_cfg, rubric=rubric)

    return TrainComponents(
        model=model,
        tokenizer=tokenizer,
        generator=generator,  # type: ignore[arg-type]
        chat=ChatFormat(tokenizer),
        env_factory=factory,
        train_tasks=tasks,
        eval_tasks=tasks[:2],
    )
