"""Optional warm start: supervised fine-tuning on demonstration trajectories before RL.

Uses TRL's `SFTTrainer` on a pre-tokenized dataset: `input_ids` = the trajectory's token ids and
`assistant_masks` = its loss mask, which TRL 1.16 folds into `labels` (-100 where the mask is 0),
so exactly the tokens RL would train (the model's own turns) carry the loss. Loss before/after is
measured here with the same masked mean NLL, so the numbers do not depend on TRL's logging.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worker.rl.types import Trajectory

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SFTStageConfig:
    """Settings of the warm-start stage."""

    epochs: float = 1.0
    """Passes over the demonstrations (ignored when max_steps > 0)."""
    lr: float = 1e-5
    """AdamW learning rate (linear decay, no warmup)."""
    batch_size: int = 4
    """Trajectories per optimizer step."""
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 runs `epochs` passes."""
    max_length: int | None = None
    """Truncate longer trajectories (keep the start); None keeps them whole."""
    seed: int = 0
    """Seed for data order and dropout."""

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), e.g. 1e-5, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be >= 1, or -1 to run `epochs` passes; got {self.max_steps}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {self.max_length}")


@dataclass(frozen=True, slots=True)
class SFTResult:
    """What the stage did."""

    loss_start: float
    """Mean NLL per mask-1 token over the demonstrations before training."""
    loss_end: float
    """The same after training."""
    steps: int
    """Optimizer steps taken."""
    seconds: float
    """Wall time of the training run (loss measurements excluded)."""


def _rows(trajectories: Sequence[Trajectory], max_length: int | None) -> list[tuple[list[int], list[int]]]:
    rows = []
    for i, traj in enumerate(trajectories):
        ids, mask = list(traj.token_ids), list(traj.loss_mask)
        if len(ids) != len(mask):
            raise ValueError(f"trajectory {i} ({traj.task_id}): token_ids and loss_mask lengths differ")
        if max_length is not None:
            ids, mask = ids[:max_length], mask[:max_length]
        if sum(mask[1:]) == 0:  # the first token has no context, so it is never a target
            logger.warning("skipping trajectory %d (%s): no mask-1 tokens to learn", i, traj.task_id)
            continue
        rows.append((ids, mask))
    return rows


def trajectories_to_dataset(trajectories: Sequence[Trajectory], max_length: int | None = None) -> Any:
    """A `datasets.Dataset` with `input_ids` and `assistant_masks` (TRL's per-token loss mask)."""
    from datasets import Dataset

    rows = _rows(trajectories, max_length)
    if not rows:
        raise ValueError("no trajectory has a mask-1 (model-written) token to train on")
    return Dataset.from_dict({"input_ids": [r[0] for r in rows], "assistant_masks": [r[1] for r in rows]})


def masked_nll(model: Any, trajectories: Sequence[Trajectory], *, max_length: int | None = None) -> float:
    """Mean next-token NLL over mask-1 positions (token-weighted across all trajectories)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for ids, mask in _rows(trajectories, max_length):
                input_ids = torch.tensor([ids], device=device)  # (1, T)
                logits = model(input_ids=input_ids).logits[0, :-1].float()  # (T-1, V)
                targets = input_ids[0, 1:]  # (T-1,)
                weights = torch.tensor(mask[1:], device=device, dtype=torch.bool)  # (T-1,)
                nll = torch.nn.functional.cross_entropy(logits[weights], targets[weights], reduction="sum")
                total += float(nll)
                count += int(weights.sum())
    finally:
        model.train(was_training)
    return total / count if count else math.nan


def _sft_args(config: SFTStageConfig, output_dir: Path) -> Any:
    from trl.trainer.sft_config import SFTConfig  # the class `trl.SFTConfig` re-exports lazily

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        per_device_train_batch_size=config.batch_size,
        max_length=config.max_length,
        seed=config.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def run_sft(
    model: Any,
    tokenizer: Any,
    trajectories: Sequence[Trajectory],
    config: SFTStageConfig,
    output_dir: str | Path,
) -> SFTResult:
    """Fine-tune `model` in place on the mask-1 tokens of `trajectories` with TRL's SFTTrainer."""
    from trl.trainer.sft_trainer import SFTTrainer  # the class `trl.SFTTrainer` re-exports lazily

    dataset = trajectories_to_dataset(trajectories, config.max_length)
    loss_start = masked_nll(model, trajectories, max_length=config.max_length)
    trainer = SFTTrainer(
        model=model,
        args=_sft_args(config, Path(output_dir)),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    state = trainer.train()
    seconds = time.perf_counter() - started
    loss_end = masked_nll(model, trajectories, max_length=config.max_length)
    logger.info("sft: %d steps in %.1fs, masked nll %.4f -> %.4f", state.global_step, seconds, loss_start, loss_end)
    return SFTResult(loss_start=loss_start, loss_end=loss_end, steps=int(state.global_step), seconds=seconds)
