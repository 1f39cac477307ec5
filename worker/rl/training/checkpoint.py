"""Save and resume a training run exactly: weights, optimizer, scheduler, RNGs, sampler position.

A checkpoint is a folder `checkpoints/step_XXXXX/` written to a temporary sibling
and renamed into place, so a crash never leaves a half-written "latest". Weights
are safetensors (LoRA adapters only when training LoRA; the PPO value head beside them),
plus the model config and tokenizer so `export_hf_model` can produce a `from_pretrained` folder.
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.resolved.json"
WEIGHTS_FILE = "model.safetensors"
ADAPTER_DIR = "adapter"
VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass(frozen=True)
class CheckpointState:
    """What a checkpoint restores besides the tensors it loads in place."""

    step: int
    """Training steps completed when it was written."""
    sampler_state: dict[str, Any] = field(default_factory=dict)
    """The task sampler's position (JSON values)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved run config it was written under."""


def step_dir_name(step: int) -> str:
    return f"step_{step:05d}"


def _unwrap(model: Any) -> Any:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "save_pretrained")


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, as tensors and plain values only.

    Plain values and tensors are all `torch.load(weights_only=True)` accepts: a run dir may be
    writable by others, and a pickle that runs code on resume must not be loadable (issue #12).
    """
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # (624,)
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    saved = state["numpy"]
    if isinstance(saved, dict):
        keys = saved["keys"].numpy().astype(np.uint32)  # (624,)
        np.random.set_state((saved["name"], keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    else:  # checkpoints written before the tensor form: NumPy's own state tuple
        np.random.set_state(saved)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_plain(path: Path) -> Any:
    """`torch.load` that refuses pickled code (`weights_only=True`); older RNG files may hold NumPy arrays."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError:
        # Only NumPy's array reconstruction is allowed on top of tensors: it builds arrays, never calls code.
        reconstruct = np._core.multiarray._reconstruct  # type: ignore[attr-defined]  # NumPy 2 name, no stub
        numpy_array = [reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]
        with torch.serialization.safe_globals(numpy_array):
            return torch.load(path, weights_only=True)


def _write_weights(model: Any, folder: Path, tokenizer: Any | None) -> None:
    model = _unwrap(model)
    if _is_peft(model):
        model.save_pretrained(str(folder / ADAPTER_DIR))
        base = model.get_base_model()
    else:
        save_model(model, str(folder / WEIGHTS_FILE))  # handles tied (shared) tensors
        base = model
    if hasattr(base, "config"):
        base.config.save_pretrained(str(folder))
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(folder / "tokenizer"))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    sampler_state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    tokenizer: Any | None = None,
    keep_last: int = 2,
    value_head: torch.nn.Module | None = None,
) -> Path:
    """Write `run_dir/checkpoints/step_XXXXX` atomically, then prune to the newest `keep_last`.

    `value_head`: the PPO critic's head (training 'gae'), saved beside the policy weights.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        _write_weights(model, tmp, tokenizer)
        if value_head is not None:
            save_model(_unwrap(value_head), str(tmp / VALUE_HEAD_FILE))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        state = {"step": step, "sampler_state": sampler_state or {}}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(json.dumps(config or {}, indent=2, sort_keys=True), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune_checkpoints(run_dir, keep_last)
    logger.info("saved checkpoint %s", final)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    checkpoint_dir: str | Path,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
    value_head: torch.nn.Module | None = None,
) -> CheckpointState:
    """Load weights/optimizer/scheduler (and the value head) in place, restore RNGs; returns step and sampler state."""
    folder = Path(checkpoint_dir)
    if not (folder / STATE_FILE).is_file():
        raise ValueError(f"{folder} is not a checkpoint folder (no {STATE_FILE})")
    target = _unwrap(model)
    if _is_peft(target):
        from peft import set_peft_model_state_dict

        adapter = folder / ADAPTER_DIR / "adapter_model.safetensors"
        set_peft_model_state_dict(target, load_file(str(adapter)))
    else:
        load_model(target, str(folder / WEIGHTS_FILE))
    if value_head is not None:
        if not (folder / VALUE_HEAD_FILE).is_file():
            raise ValueError(
                f"{folder} has no {VALUE_HEAD_FILE}: it was written by a run without a critic; "
                "resume it with its own estimator or start a fresh 'gae' run"
            )
        load_model(_unwrap(value_head), str(folder / VALUE_HEAD_FILE))
    if optimizer is not None and (folder / "optimizer.pt").is_file():
        optimizer.load_state_dict(load_plain(folder / "optimizer.pt"))
    if scheduler is not None and (folder / "scheduler.pt").is_file():
        scheduler.load_state_dict(load_plain(folder / "scheduler.pt"))
    if restore_rng:
        set_rng_state(load_plain(folder / "rng.pt"))
    state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")) if (folder / CONFIG_FILE).is_file() else {}
    return CheckpointState(step=int(state["step"]), sampler_state=state.get("sampler_state", {}), config=config)


def _merged_lora_state(folder: Path) -> dict[str, torch.Tensor]:
    """Load the run's base model, apply the saved adapter and merge it (LoRA checkpoints)."""
    from peft import PeftModel

    from worker.rl.generation.loading import load_model_and_tokenizer

    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    base, _ = load_model_and_tokenizer(config.get("model", {}).get("name_or_path", "smollm2-135m"))
    merged = PeftModel.from_pretrained(base, str(folder / ADAPTER_DIR)).merge_and_unload()
    return dict(merged.state_dict())


def export_hf_model(checkpoint_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a folder loadable by `AutoModelForCausalLM.from_pretrained(out_dir)` (LoRA merged in)."""
    folder, out = Path(checkpoint_dir), Path(out_dir)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json; is it a checkpoint written by save_checkpoint?")
    out.mkdir(parents=True, exist_ok=True)
    if (folder / ADAPTER_DIR).is_dir():
        state = _merged_lora_state(folder)
        tied = json.loads((folder / "config.json").read_text()).get("tie_word_embeddings", False)
        state = {k: v.contiguous().clone() for k, v in state.items() if not (tied and k == "lm_head.weight")}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    else:
        shutil.copy2(folder / WEIGHTS_FILE, out / WEIGHTS_FILE)
    shutil.copy2(folder / "config.json", out / "config.json")
    if (folder / "tokenizer").is_dir():
        for item in (folder / "tokenizer").iterdir():
            shutil.copy2(item, out / item.name)
    return out
