"""The HF engine's linear layers on CPU, run by oneDNN over weights packed once per set of weights.

transformers' `nn.Linear` calls `F.linear`, which PyTorch hands to MKL's sgemm for float32 on CPU. At the
shapes of decoding (a few rows against each weight matrix, every matrix read from memory once a step) that
call costs far more than reading the weights: measured on a 2-core "AMD EPYC" (avx512f, avx512_bf16), 30
cold 1536 x 576 float32 matrices took 0.47 ms each at 8 rows against 0.15 ms through oneDNN over weights
reordered once into its blocked layout, and the 49,152 x 576 output layer 20.0 against 4.4 ms; prompt
prefills (512 rows) ran 2.4x faster too. The outputs differ by float rounding only (about 5e-6 relative).

While the engine serves, every plain `nn.Linear` of the served model runs `mkldnn._linear_pointwise` over its
packed weight; the packs are made when a call starts and the weights changed since they were made (the
engine's `weights_key`), and freed by `release()` with the KV caches. They are one more copy of the linear
weights (SmolLM2-135M: 0.54 GB in float32), held only while a rollout runs. Packing needs a CPU build of
PyTorch with oneDNN and float32 or bfloat16 weights; anywhere else the layers run as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

PACKED_DTYPES = (torch.float32, torch.bfloat16)


def packing_unsupported(model: Any, device: torch.device) -> str | None:
    """Why the served model's linear layers cannot run packed here, or None when they can."""
    if device.type != "cpu":
        return f"the engine runs on {device.type} (packing is for CPU)"
    if not torch._C._has_mkldnn or not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this PyTorch build has no oneDNN linear"
    dtypes = {m.weight.dtype for m in _linears(model)}
    if not dtypes:
        return "the model has no plain nn.Linear layers"
    if not dtypes <= set(PACKED_DTYPES):
        return f"its linear weights are {sorted(str(d) for d in dtypes)} (packing takes float32 or bfloat16)"
    if torch.bfloat16 in dtypes and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "its linear weights are bfloat16 and this CPU has no oneDNN bfloat16 kernels"
    return None


def _linears(model: Any) -> list[nn.Linear]:
    return [m for m in model.modules() if type(m) is nn.Linear]


class PackedLinears:
    """Packed copies of a model's linear weights, swapped in for the duration of `serving`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.key: tuple[int, ...] | None = None
        self.packs: list[tuple[nn.Linear, Tensor]] = []

    def release(self) -> None:
        """Drop the packs (the next `serving` packs again)."""
        self.packs, self.key = [], None

    @contextlib.contextmanager
    def serving(self, weights_key: tuple[int, ...]) -> Iterator[None]:
        """Run the model's linear layers on packs of the weights `weights_key` names (packing them if needed)."""
        if self.key != weights_key:
            self.release()
            with torch.inference_mode():
                self.packs = [
                    (m, torch.ops.mkldnn._reorder_linear_weight(m.weight.detach())) for m in _linears(self.model)
                ]
            self.key = weights_key
        for module, pack in self.packs:  # an instance attribute shadows nn.Linear.forward until popped
            module.__dict__["forward"] = _PackedForward(pack, module.bias)
        try:
            yield
        finally:
            for module, _ in self.packs:
                module.__dict__.pop("forward", None)


class _PackedForward:
    """`nn.Linear.forward` over a packed weight (an object, not a closure, so it holds no frame)."""

    __slots__ = ("bias", "pack")

    def __init__(self, pack: Tensor, bias: Tensor | None) -> None:
        self.pack, self.bias = pack, bias

    def __call__(self, x: Tensor) -> Tensor:
        out: Tensor = torch.ops.mkldnn._linear_pointwise(x, self.pack, self.bias, "none", [], "")
        return out
