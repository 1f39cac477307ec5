"""The SFT warm start on a tiny random Llama: mask-1 loss falls, mask-0 tokens never count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tests.rl._learn_fixtures import char_tokenizer as build_char_tokenizer
from worker.rl.training.sft import SFTStageConfig, masked_nll, run_sft, trajectories_to_dataset
from worker.rl.types import Trajectory


def build_tiny_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config)


def demo(tokenizer: PreTrainedTokenizerFast, prompt: str, reply: str, task_id: str = "t") -> Trajectory:
    """A one-turn demonstration: prompt tokens under mask 0, the reply + <|im_end|> under mask 1."""
    p = tokenizer.encode(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    r = tokenizer.encode(f"{reply}<|im_end|>", add_special_tokens=False)
    return Trajectory(
        task_id=task_id,
        group_id="g",
        token_ids=tuple(p + r),
        loss_mask=(0,) * len(p) + (1,) * len(r),
        logprobs=(None,) * len(p) + (0.0,) * len(r),
        prompt_length=len(p),
        turns=(),
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def demos(tokenizer: PreTrainedTokenizerFast) -> list[Trajectory]:
    return [
        demo(tokenizer, q, a, str(i)) for i, (q, a) in enumerate([("2+2?", "4"), ("sky?", "blue"), ("hi", "hello")])
    ]


def test_dataset_columns_carry_the_mask(demos: list[Trajectory]) -> None:
    ds = trajectories_to_dataset(demos)
    assert ds.column_names == ["input_ids", "assistant_masks"]
    assert ds[1]["input_ids"] == list(demos[1].token_ids)
    assert ds[1]["assistant_masks"] == list(demos[1].loss_mask)


def test_dataset_rejects_all_masked(tokenizer: PreTrainedTokenizerFast) -> None:
    t = demo(tokenizer, "q", "a")
    blank = Trajectory(t.task_id, t.group_id, t.token_ids, (0,) * len(t.token_ids), t.logprobs, t.prompt_length, ())
    with pytest.raises(ValueError, match="mask-1"):
        trajectories_to_dataset([blank])


def test_masked_nll_ignores_mask0_targets(tokenizer: PreTrainedTokenizerFast) -> None:
    model = build_tiny_llama(len(tokenizer))
    t = demo(tokenizer, "what?", "ok")
    changed_prompt = list(t.token_ids)
    changed_prompt[1] = tokenizer.convert_tokens_to_ids("z")  # a mask-0 target (also context for later tokens)
    t_prompt = Trajectory(t.task_id, t.group_id, tuple(changed_prompt), t.loss_mask, t.logprobs, t.prompt_length, ())
    extended = Trajectory(  # one extra mask-0 token at the end: a target that must not count
        t.task_id, t.group_id, (*t.token_ids, 5), (*t.loss_mask, 0), (*t.logprobs, None), t.prompt_length, ()
    )
    assert masked_nll(model, [extended]) == pytest.approx(masked_nll(model, [t]), abs=1e-6)
    assert masked_nll(model, [t_prompt]) != pytest.approx(masked_nll(model, [t]), abs=1e-6)  # context does matter


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        SFTStageConfig(max_steps=0)
    with pytest.raises(ValueError, match="lr"):
        SFTStageConfig(lr=0.0)


def test_run_sft_lowers_masked_loss(
    tokenizer: PreTrainedTokenizerFast, demos: list[Trajectory], tmp_path: Path
) -> None:
    model = build_tiny_llama(len(tokenizer))
    result = run_sft(model, tokenizer, demos, SFTStageConfig(lr=1e-2, batch_size=3, max_steps=30), tmp_path)
    assert result.steps == 30
    assert result.loss_end < result.loss_start * 0.6
    assert result.seconds > 0


def test_run_sft_mask0_tail_token_does_not_change_training(tokenizer: PreTrainedTokenizerFast, tmp_path: Path) -> None:
    base = demo(tokenizer, "2+2?", "4")

    def with_tail(token: int) -> Trajectory:  # a trailing mask-0 token: only ever a target, never context
        return Trajectory(
            base.task_id, "g", (*base.token_ids, token), (*base.loss_mask, 0), (*base.logprobs, None), 0, ()
        )

    config = SFTStageConfig(lr=1e-2, batch_size=1, max_steps=3)
    weights = []
    for tail in (10, 40):
        model = build_tiny_llama(len(tokenizer))
        run_sft(model, tokenizer, [with_tail(tail)], config, tmp_path / str(tail))
        weights.append(model.model.embed_tokens.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], atol=0, rtol=0)
    untrained = build_tiny_llama(len(tokenizer)).model.embed_tokens.weight
    assert not torch.equal(weights[0], untrained)  # training did move the weights
