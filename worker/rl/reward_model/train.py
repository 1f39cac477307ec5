"""Train a Bradley–Terry reward model from label pairs with TRL's `RewardTrainer`; save a versioned artifact.

Any causal LM becomes a sequence scorer (`AutoModelForSequenceClassification`, one logit). To stay
affordable on a laptop CPU only the top `train_layers` decoder layers, the final norm and the score
head train; the rest of the backbone is frozen. Held-out pairwise accuracy and calibration (ECE of
sigmoid(score difference)) are measured on whole held-out groups and saved with the provenance.
`kind='step'` trains a step scorer the same way, on (good-marked, bad-marked) turn prefixes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from worker.rl.reward_model.pairs import (
    LabelRecord,
    PairSet,
    TextView,
    pairs_from_labels,
    split_pairs,
    step_pairs_from_labels,
)
from worker.rl.reward_model.scorer import (
    ARTIFACT_VERSION,
    META_FILE,
    MODEL_DIR,
    RewardModelScorer,
    encode_text,
    find_decoder_layers,
    tokenizer_fingerprint,
)

logger = logging.getLogger(__name__)

REWARD_MODEL_KINDS = ("trajectory", "step")
"""What a reward model scores: a whole trajectory's view, or each assistant turn's prefix."""


@dataclass(frozen=True)
class RewardModelConfig:
    """What `rm_train` trains and how (the request's `config`, validated here)."""

    base_model: str = "smollm2-135m"
    """Any causal LM: the bundled alias, a local dir or a hub id (its own tokenizer is used)."""
    kind: str = "trajectory"
    """'trajectory' (one score per episode, from pairwise and score labels) or 'step' (a step scorer: one
    score per assistant turn's prefix, from good/bad step marks; used as a process reward)."""
    train_layers: int = 2
    """Top decoder layers left trainable (0 = score head and final norm only)."""
    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 8
    """Pairs per optimizer step."""
    max_length: int = 256
    """Tokens kept per text view."""
    heldout_fraction: float = 0.2
    min_pairs: int = 8
    """Fewer preference pairs than this is refused with a message saying how to get more."""
    seed: int = 0
    device: str = "auto"
    view: TextView = field(default_factory=TextView)
    """How trajectories are shortened into the scored text."""

    def __post_init__(self) -> None:
        checks = {
            "train_layers": self.train_layers >= 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "max_length": self.max_length >= 16,
            "heldout_fraction": 0.0 < self.heldout_fraction < 1.0,
            "min_pairs": self.min_pairs >= 2,
            "device": self.device in ("auto", "cpu", "cuda"),
            "kind": self.kind in REWARD_MODEL_KINDS,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"reward model config: invalid {', '.join(bad)} (need train_layers >= 0, epochs >= 1, batch_size >= 1, "
                "learning_rate > 0, max_length >= 16, 0 < heldout_fraction < 1, min_pairs >= 2, device auto|cpu|cuda, "
                "kind trajectory|step)"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown reward model config key(s) {unknown}; valid: {', '.join(sorted(names))}")
        view = data.get("view")
        return cls(**{**data, "view": TextView(**view) if isinstance(view, dict) else TextView()})


@dataclass(frozen=True)
class RewardModelReport:
    """What training measured; saved in the artifact's `reward_model.json`."""

    heldout_accuracy: float
    heldout_ece: float
    train_accuracy: float
    train_pairs: int
    heldout_pairs: int
    train_s: float
    trainable_params: int
    total_params: int


def pairwise_metrics(chosen: torch.Tensor, rejected: torch.Tensor, bins: int = 10) -> tuple[float, float]:
    """(accuracy, ECE) of scores on pairs: ties count half; calibration of p = sigmoid(chosen - rejected).

    Each pair enters the ECE in both orientations, (p, 1) and (1 - p, 0), so confidences cover [0, 1].
    """
    diff = chosen - rejected  # (P,)
    accuracy = float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean().item())
    prob = torch.sigmoid(diff)  # (P,)
    conf = torch.cat([prob, 1 - prob])  # (2P,)
    outcome = torch.cat([torch.ones_like(prob), torch.zeros_like(prob)])  # (2P,)
    index = torch.clamp((conf * bins).long(), max=bins - 1)  # (2P,)
    ece = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            ece += float(in_bin.float().mean() * (conf[in_bin].mean() - outcome[in_bin].mean()).abs())
    return accuracy, ece


def _freeze_backbone(model: Any, train_layers: int) -> tuple[int, int]:
    """Freeze everything but the top `train_layers` decoder layers, the final norm and the head → (trainable, total)."""
    for param in model.parameters():
        param.requires_grad_(False)
    layers = find_decoder_layers(model)
    keep: list[Any] = list(layers[len(layers) - train_layers :]) if train_layers else []
    keep.append(model.score)
    norm = getattr(model.base_model, "norm", None)
    if norm is not None:
        keep.append(norm)
    for module in keep:
        for param in module.parameters():
            param.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def _dataset(pairs: Sequence[Any], tokenizer: Any, max_length: int) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "chosen_ids": [encode_text(tokenizer, p.chosen, max_length) for p in pairs],
            "rejected_ids": [encode_text(tokenizer, p.rejected, max_length) for p in pairs],
        }
    )


def _score_pairs(scorer: RewardModelScorer, pairs: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = torch.tensor(scorer.score_texts([p.chosen for p in pairs]))  # (P,)
    rejected = torch.tensor(scorer.score_texts([p.rejected for p in pairs]))  # (P,)
    return chosen, rejected


def train_reward_model(
    records: Sequence[LabelRecord], config: RewardModelConfig, out_dir: Path, *, provenance: dict[str, Any]
) -> RewardModelReport:
    """Labels → pairs → `RewardTrainer` → held-out metrics → artifact in `out_dir` (model/ + reward_model.json)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl.trainer.reward_config import RewardConfig
    from trl.trainer.reward_trainer import RewardTrainer

    from worker.rl.generation.loading import resolve_model_path

    build_pairs = step_pairs_from_labels if config.kind == "step" else pairs_from_labels
    pairs = split_pairs(
        build_pairs(records, config.view),
        heldout_fraction=config.heldout_fraction,
        min_pairs=config.min_pairs,
        seed=config.seed,
        kind=config.kind,
    )
    device = "cuda" if config.device == "auto" and torch.cuda.is_available() else config.device.replace("auto", "cpu")
    source = resolve_model_path(config.base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(config.seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    trainable, total = _freeze_backbone(model, config.train_layers)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rm-train-") as scratch:
        args = RewardConfig(
            output_dir=scratch,
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            max_length=config.max_length,
            seed=config.seed,
            bf16=False,
            gradient_checkpointing=False,
            save_strategy="no",
            report_to=[],
            logging_steps=10,
            disable_tqdm=True,
            use_cpu=device == "cpu",
            lr_scheduler_type="constant",
            warmup_steps=0,
            dataloader_num_workers=0,
        )
        dataset = _dataset(pairs.train, tokenizer, config.max_length)
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
    train_s = time.perf_counter() - t0
    model = model.eval()  # the trainer trained this very object in place
    scorer = RewardModelScorer(model, tokenizer, view=config.view, max_length=config.max_length)
    accuracy, ece = pairwise_metrics(*_score_pairs(scorer, pairs.heldout))
    train_accuracy, _ = pairwise_metrics(*_score_pairs(scorer, pairs.train))
    report = RewardModelReport(
        accuracy, ece, train_accuracy, len(pairs.train), len(pairs.heldout), train_s, trainable, total
    )
    _save(out_dir, model, tokenizer, config, report, pairs, {**provenance, "base_model_path": str(source)})
    logger.info(
        "reward model: held-out accuracy %.3f, ECE %.3f on %d pairs (%.0fs)", accuracy, ece, len(pairs.heldout), train_s
    )
    return report


def _save(
    out_dir: Path,
    model: Any,
    tokenizer: Any,
    config: RewardModelConfig,
    report: RewardModelReport,
    pairs: PairSet,
    provenance: dict[str, Any],
) -> None:
    """Write `model/` and `reward_model.json` into a temp dir, then rename it into place (no half artifacts)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp / MODEL_DIR)
    tokenizer.save_pretrained(tmp / MODEL_DIR)
    meta = {
        "artifact_version": ARTIFACT_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "base_model": config.base_model,
        "kind": config.kind,
        "input": "text",
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "label_ids": list(pairs.label_ids),
        "config": dataclasses.asdict(config),
        "metrics": dataclasses.asdict(report),
        "provenance": provenance,
        "pair_sources": {
            s: sum(1 for p in (*pairs.train, *pairs.heldout) if p.source == s) for s in ("pairwise", "scores", "steps")
        },
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    if out_dir.exists():
        raise FileExistsError(f"reward model artifact {out_dir} already exists; artifacts are never overwritten")
    tmp.rename(out_dir)
