"""A trained reward model as a scorer of text views, loadable from its artifact dir.

`RewardModelScorer.score_trajectories` scores a whole step's trajectories in batches (what the
trainer calls); `score(trajectory, task)` makes it a rubric `RewardSource`. It scores decoded
text: the view is built from the trajectory's turns, so the policy's tokenizer does not matter and
never meets the reward model's. Only the model's own tokenizer must be the one it was trained with
(`TokenizerMismatchError` otherwise: its token ids would index another vocabulary).
`score_prefixes` is the step scorer's batch call: one score per assistant turn's prefix.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from worker.rl.reward_model.pairs import TextView, trajectory_prefix_texts, trajectory_text
from worker.rl.types import Task, Trajectory

logger = logging.getLogger(__name__)

ARTIFACT_VERSION = 1
META_FILE = "reward_model.json"
MODEL_DIR = "model"


class TokenizerMismatchError(ValueError):
    """A reward model would read token ids of a tokenizer it was not trained with."""


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary (token → id): equal fingerprints mean interchangeable token ids."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha1(json.dumps(vocab).encode()).hexdigest()[:16]


def check_tokenizer(meta: dict[str, Any], tokenizer: Any, model: Any, where: str) -> None:
    """The artifact's tokenizer must be the one the model was trained with and fit its embedding table."""
    expected, found = meta.get("tokenizer_fingerprint"), tokenizer_fingerprint(tokenizer)
    rows = int(model.get_input_embeddings().num_embeddings)
    if (expected is not None and expected != found) or len(tokenizer) > rows:
        raise TokenizerMismatchError(
            f"reward model {where} was trained with tokenizer {meta.get('tokenizer')!r} (fingerprint {expected}, "
            f"{rows} embedding rows) but its {MODEL_DIR}/ dir now holds one with fingerprint {found} "
            f"({len(tokenizer)} tokens): its token ids would be mixed with another vocabulary. Restore the "
            "artifact's own tokenizer files or retrain it. (A reward model scores decoded text, so it may use "
            "a different tokenizer from the policy; only its own must match.)"
        )


def encode_text(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """Token ids of a view: the text's ids cut to `max_length - 1`, then EOS (the scored position)."""
    ids = list(tokenizer.encode(text, add_special_tokens=False))[: max_length - 1]
    return [*ids, tokenizer.eos_token_id]


def find_decoder_layers(model: Any) -> torch.nn.ModuleList:
    """The decoder-layer list of a `*ForSequenceClassification` model (Llama, Qwen, Mistral: `base.layers`)."""
    base = model.base_model
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__}; use train_layers=0 (head only)")


class RewardModelScorer:
    """Scores text views with a sequence-classification model (one logit per text)."""

    def __init__(
        self, model: Any, tokenizer: Any, *, view: TextView = TextView(), max_length: int = 256, batch_size: int = 16
    ) -> None:
        self.model, self.tokenizer, self.view = model, tokenizer, view
        self.max_length, self.batch_size = max_length, batch_size
        self.meta: dict[str, Any] = {}

    @classmethod
    def load(cls, artifact_dir: Path | str, *, device: str = "cpu", batch_size: int = 16) -> RewardModelScorer:
        """Load `artifact_dir` (written by `train_reward_model`); a missing or partial artifact raises."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        root = Path(artifact_dir)
        meta_path = root / META_FILE
        if not meta_path.is_file() or not (root / MODEL_DIR).is_dir():
            raise FileNotFoundError(
                f"reward model artifact {root} is missing or incomplete (need {META_FILE} and {MODEL_DIR}/); "
                "train it again with rm_train or point at an existing artifact"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("artifact_version") != ARTIFACT_VERSION:
            raise ValueError(
                f"reward model artifact {root} has version {meta.get('artifact_version')}, "
                f"this code reads version {ARTIFACT_VERSION}; retrain it"
            )
        tokenizer = AutoTokenizer.from_pretrained(root / MODEL_DIR)
        model = AutoModelForSequenceClassification.from_pretrained(root / MODEL_DIR, dtype=torch.float32)
        check_tokenizer(meta, tokenizer, model, str(root))
        model = model.to(device).eval()
        config = meta.get("config") or {}
        scorer = cls(
            model,
            tokenizer,
            view=TextView(**(config.get("view") or {})),
            max_length=int(config.get("max_length", 256)),
            batch_size=batch_size,
        )
        scorer.meta = meta
        return scorer

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """One score per text, in batches of `batch_size` (right-padded; the model pools the last real token)."""
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            encoded = [encode_text(self.tokenizer, t, self.max_length) for t in texts[start : start + self.batch_size]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)  # (B, T)
            attention = torch.zeros((len(encoded), width), dtype=torch.long)  # (B, T)
            for row, ids in enumerate(encoded):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits  # (B, 1)
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
        return scores

    def score_trajectories(self, trajectories: Sequence[Trajectory]) -> list[float]:
        return self.score_texts([trajectory_text(t, self.view) for t in trajectories])

    @property
    def kind(self) -> str:
        """'trajectory' or 'step' (artifacts from before step scorers are trajectory models)."""
        return str(self.meta.get("kind") or "trajectory")

    def score_prefixes(self, trajectories: Sequence[Trajectory]) -> list[list[float]]:
        """One score per assistant turn of each trajectory (its prefix view), all prefixes batched together."""
        texts = [trajectory_prefix_texts(t, self.view) for t in trajectories]
        flat = self.score_texts([x for row in texts for x in row])
        out, start = [], 0
        for row in texts:
            out.append(flat[start : start + len(row)])
            start += len(row)
        return out

    def score(self, trajectory: Trajectory, task: Task) -> float | None:
        """The rubric `RewardSource` contract (one trajectory; the trainer batches through `score_trajectories`)."""
        return self.score_trajectories([trajectory])[0]
