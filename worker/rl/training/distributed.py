"""One training job across processes (`parallel.nproc` > 1): the ranks, their launch and the collectives.

Data parallel. Every rank builds the same components, draws the same prompts from the same seeded sampler and
keeps a contiguous share of them (`collect.collect_step`: whole groups, a per-rank seed). The advantages are
computed over the union of the step's episodes (`global_advantages`, so batch-wide whitening sees every
rank), each minibatch's loss denominator (tokens, sequences) is summed over the ranks before the local
micro-batches are weighted by it, and the local gradients are summed with one all-reduce per optimizer step
(`all_reduce_gradients`): the N-rank update is the 1-process update over the union of the prompts. Rank 0
alone writes metrics, trajectories, checkpoints and (through the job's callbacks) database rows; it polls
cancel and the heartbeat and broadcasts a stop flag every step (`agree_stop`).

Launch (`launch`): rank 0 is the caller's process (the CLI, or the worker job holding the DB lease and the
heartbeat thread, with its callbacks unchanged); ranks 1..N-1 are spawned with `torch.multiprocessing`
(start method 'spawn') and join a process group over a TCP store that rank 0 opens on loopback. An elastic
`torch.distributed.run` launch would make every rank a fresh process, so rank 0 would need its own DB
connection, lease and callbacks; spawning keeps them where they are. A rank that fails aborts the group: its
peers' next collective errors (gloo: at once; nccl: at `parallel.timeout_s`), rank 0 terminates the others
and the job raises the first error. What was checkpointed stays resumable.

On CUDA rank r uses device r of the job's visible devices (a worker started with
`STUDIO_WORKER_GPUS_PER_JOB=N` gives each job N of them). `parallel.strategy='fsdp'` shards each decoder
layer across the ranks with `torch.distributed.fsdp.fully_shard` (embeddings, final norm and lm_head stay
replicated and are all-reduced like DDP's); the sharded layers need every rank to run the same number of
passes, so the update pads each rank's micro-batches to the longest rank's with zero-weight passes.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._C._distributed_c10d import Store, TCPStore
from torch.multiprocessing.spawn import start_processes

from worker.rl.algorithms.advantages import AdvantageInputs, AdvantageOutputs, Estimator, with_process_rewards
from worker.rl.rollout import RolloutBatch, RolloutStats, concat_batches
from worker.rl.training.config import TrainConfig
from worker.rl.types import Trajectory

logger = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank, world size and how the policy is held."""

    rank: int = 0
    world: int = 1
    strategy: str = "ddp"

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes and talks to the database."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one rank: collectives run."""
        return self.world > 1

    @property
    def sharded(self) -> bool:
        """The policy's decoder layers are FSDP-sharded over the group (only ever inside a process group)."""
        return self.strategy == "fsdp"


SINGLE = Ranks()
"""The one-process job."""


def initialized() -> bool:
    """Whether this process is a rank of a process group."""
    return dist.is_available() and dist.is_initialized()


def ranks_of(config: TrainConfig) -> Ranks:
    """This process's `Ranks` (`SINGLE` outside a process group, whatever `parallel.strategy` says)."""
    if not initialized():
        return SINGLE
    return Ranks(dist.get_rank(), dist.get_world_size(), config.parallel.strategy)


def backend_of(config: TrainConfig) -> str:
    """The process-group backend: `parallel.backend`, 'auto' = nccl on CUDA, gloo on CPU."""
    if config.parallel.backend != "auto":
        return config.parallel.backend
    return "nccl" if uses_cuda(config) else "gloo"


def uses_cuda(config: TrainConfig) -> bool:
    device = config.model.device
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def check_launch(config: TrainConfig) -> None:
    """Fail before spawning anything when the machine cannot hold `parallel.nproc` ranks."""
    nproc, backend = config.parallel.nproc, backend_of(config)
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("parallel.backend='nccl' needs CUDA; use parallel.backend='gloo' (or 'auto') on CPU")
    if uses_cuda(config) and torch.cuda.device_count() < nproc:
        raise ValueError(
            f"parallel.nproc={nproc} needs one GPU per rank; {torch.cuda.device_count()} visible "
            "(CUDA_VISIBLE_DEVICES; a worker gives a job STUDIO_WORKER_GPUS_PER_JOB of them)"
        )


# ---- launch -------------------------------------------------------------------------------------------------


class RankFailed(RuntimeError):
    """A rank other than 0 raised; the message carries its traceback."""


def _join_group(rank: int, world: int, store: Store, config: TrainConfig) -> None:
    if uses_cuda(config):
        torch.cuda.set_device(rank)
    else:  # CPU ranks split the cores instead of each spinning up one thread per core
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group(
        backend_of(config),
        store=store,
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=config.parallel.timeout_s),
    )


def _rank_main(index: int, body: Callable[[], object], port: int, config: TrainConfig) -> None:
    """Entry of spawned rank `index + 1`: join the group, run `body`, leave the group."""
    _die_with_parent()
    world = config.parallel.nproc
    store = TCPStore("127.0.0.1", port, world, is_master=False, timeout=timedelta(seconds=config.parallel.timeout_s))
    _join_group(index + 1, world, store, config)
    try:
        body()
    finally:
        dist.destroy_process_group()


def _die_with_parent() -> None:
    """Linux: this rank gets SIGTERM when rank 0's process ends, however it ends (no orphaned ranks)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


@contextmanager
def _may_have_children() -> Iterator[None]:
    """Let a daemonic process (a Celery prefork pool process runs each job in one) start the ranks.

    multiprocessing refuses children to daemonic processes lest they be orphaned; here rank 0 reaps its
    ranks on every exit path and each rank dies with it (`_die_with_parent`).
    """
    config: dict[str, Any] = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    daemon = config.get("daemon")
    config["daemon"] = False
    try:
        yield
    finally:
        if daemon is not None:
            config["daemon"] = daemon


def _first_child_error(ctx: Any, wait_s: float) -> BaseException | None:
    """The first failure among the spawned ranks, waiting up to `wait_s` for one to report."""
    try:
        ctx.join(timeout=wait_s)
    except Exception as err:  # ProcessRaisedException / ProcessExitedException: a rank failed
        return err
    return None


def _is_collective_error(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because a peer went away (not an error of rank 0's own)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in ("gloo", "nccl", "connection", "timed out"))


def _terminate(ctx: Any) -> None:
    for proc in ctx.processes:
        if proc.is_alive():
            proc.terminate()
    for proc in ctx.processes:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()


def launch(config: TrainConfig, main: Callable[[], R], child: Callable[[], object]) -> R:
    """Run `main` as rank 0 in this process and the picklable `child` as ranks 1..nproc-1 (spawned)."""
    check_launch(config)
    world = config.parallel.nproc
    timeout = timedelta(seconds=config.parallel.timeout_s)
    store = TCPStore("127.0.0.1", 0, world, is_master=True, timeout=timeout, wait_for_workers=False)
    with _may_have_children():
        ctx = start_processes(  # type: ignore[no-untyped-call]
            _rank_main, args=(child, store.port, config), nprocs=world - 1, join=False, start_method="spawn"
        )
    threads = torch.get_num_threads()
    try:
        _join_group(0, world, store, config)
        try:
            result = main()
        finally:
            dist.destroy_process_group()
            torch.set_num_threads(threads)  # the caller (e.g. a worker's pool process) gets its cores back
    except BaseException as exc:
        collective = _is_collective_error(exc)  # rank 0 only saw a peer go away: its report is on the way
        child_error = _first_child_error(ctx, wait_s=60.0 if collective else 5.0)
        _terminate(ctx)
        if child_error is not None and collective:
            raise RankFailed(f"a training rank failed: {child_error}") from exc
        raise
    # the ranks run the same steps as rank 0, so they end with it; one still running at the timeout is ended
    deadline = time.monotonic() + config.parallel.timeout_s
    try:
        while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                _terminate(ctx)
                logger.warning("training ranks still running %.0f s after rank 0 ended", config.parallel.timeout_s)
                break
    except Exception as err:
        _terminate(ctx)
        raise RankFailed(f"a training rank failed after rank 0 finished: {err}") from err
    return result


# ---- collectives --------------------------------------------------------------------------------------------


def _device(ranks: Ranks) -> torch.device:
    backend = dist.get_backend() if ranks.active else "gloo"
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def sum_values(values: Sequence[float], ranks: Ranks) -> list[float]:
    """Each value summed over the ranks (float64)."""
    if not ranks.active:
        return [float(v) for v in values]
    buf = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device(ranks))
    dist.all_reduce(buf)
    return [float(v) for v in buf.tolist()]


def max_int(value: int, ranks: Ranks) -> int:
    """The largest `value` of any rank."""
    if not ranks.active:
        return value
    buf = torch.tensor([value], dtype=torch.long, device=_device(ranks))
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return int(buf.item())


def agree_stop(local: bool, ranks: Ranks) -> bool:
    """Rank 0's stop decision (cancel, lost lease, watchdog), on every rank."""
    if not ranks.active:
        return local
    buf = torch.tensor([1 if local else 0], dtype=torch.long, device=_device(ranks))
    dist.broadcast(buf, src=0)
    return bool(buf.item())


def gather_objects(items: list[Any], ranks: Ranks) -> list[Any]:
    """Every rank's `items` concatenated in rank order, on every rank."""
    if not ranks.active:
        return items
    parts: list[list[Any] | None] = [None] * ranks.world
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in (part or [])]


def gather_rollout(trajectories: list[Trajectory], stats: RolloutStats, ranks: Ranks) -> RolloutBatch:
    """The step's episodes of all ranks (rank order) and their summed counters; wall time is the slowest's."""
    if not ranks.active:
        return RolloutBatch(trajectories, stats)
    everything = gather_objects([(trajectories, stats)], ranks)
    merged = concat_batches([RolloutBatch(list(part), s) for part, s in everything])  # counters summed
    return replace(merged, stats=replace(merged.stats, seconds=max(s.seconds for _, s in everything)))


def _gather_rows(tensor: Tensor, ranks: Ranks, width: int) -> Tensor:
    """(n_r, T_r) per rank → (sum n_r, width), zero-padded on the right, rank order."""
    rows = [int(r) for r in sum_values_per_rank(tensor.shape[0], ranks)]
    padded = torch.zeros((max(rows), width), dtype=tensor.dtype)
    padded[: tensor.shape[0], : tensor.shape[1]] = tensor.cpu()
    device = _device(ranks)
    parts = [torch.zeros_like(padded, device=device) for _ in range(ranks.world)]
    dist.all_gather(parts, padded.to(device))
    return torch.cat([part[:n].cpu() for part, n in zip(parts, rows, strict=True)])


def sum_values_per_rank(value: int, ranks: Ranks) -> list[int]:
    """Each rank's `value`, in rank order."""
    buf = torch.zeros(ranks.world, dtype=torch.long, device=_device(ranks))
    buf[ranks.rank] = value
    dist.all_reduce(buf)
    return [int(v) for v in buf.tolist()]


def global_advantages(estimator: Estimator, inputs: AdvantageInputs, ranks: Ranks) -> AdvantageOutputs:
    """The estimator over the union of the ranks' episodes, this rank's rows returned.

    Group ids are made unique per rank before the estimator sees them; batch-wide statistics (e.g.
    REINFORCE++'s whitening) are those of the whole step.
    """
    if not ranks.active:
        return with_process_rewards(estimator, inputs)
    n, width = inputs.token_rewards.shape
    full_width = max_int(width, ranks)
    before = sum(sum_values_per_rank(n, ranks)[: ranks.rank])
    group_counts = sum_values_per_rank(int(inputs.group_ids.max().item()) + 1 if n else 0, ranks)
    offset = sum(group_counts[: ranks.rank])

    def grid(t: Tensor | None) -> Tensor | None:
        return None if t is None else _gather_rows(t.float(), ranks, full_width)

    groups = _gather_rows((inputs.group_ids + offset).view(-1, 1), ranks, 1).view(-1)
    full = replace(
        inputs,
        token_rewards=_gather_rows(inputs.token_rewards.float(), ranks, full_width),
        response_mask=_gather_rows(inputs.response_mask.float(), ranks, full_width),
        group_ids=groups.long(),
        values=grid(inputs.values),
        step_rewards=grid(inputs.step_rewards),
        step_mask=grid(inputs.step_mask),
    )
    out = with_process_rewards(estimator, full)
    mine = slice(before, before + n)
    return AdvantageOutputs(out.advantages[mine, :width], out.returns[mine, :width])


def global_token_mean(values: Tensor, mask: Tensor, ranks: Ranks) -> float:
    """Mean of `values` over the masked tokens of every rank."""
    total, count = sum_values([float((values * mask).sum().item()), float(mask.sum().item())], ranks)
    return total / count if count > 0 else 0.0


def mean_over_ranks(metrics: dict[str, float], ranks: Ranks) -> dict[str, float]:
    """Per-rank metrics averaged over the ranks (same keys on every rank)."""
    if not ranks.active:
        return metrics
    keys = sorted(metrics)
    return dict(zip(keys, (v / ranks.world for v in sum_values([metrics[k] for k in keys], ranks)), strict=True))


def broadcast_parameters(modules: Iterable[nn.Module | None], ranks: Ranks) -> None:
    """Rank 0's parameters and buffers on every rank (replicas start identical whatever each rank loaded)."""
    if not ranks.active:
        return
    device = _device(ranks)
    for module in modules:
        if module is None:
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            if _is_dtensor(tensor):
                continue
            buf = tensor.data.to(device)
            dist.broadcast(buf, src=0)
            if buf.data_ptr() != tensor.data.data_ptr():
                tensor.data.copy_(buf)


def _is_dtensor(tensor: Tensor) -> bool:
    return type(tensor).__name__ == "DTensor" or type(getattr(tensor, "data", None)).__name__ == "DTensor"


def replicated_parameters(modules: Iterable[nn.Module | None]) -> list[nn.Parameter]:
    """The trainable parameters every rank holds whole (all of them under DDP; FSDP's unsharded rest)."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for module in modules:
        if module is None:
            continue
        for param in module.parameters():
            if param.requires_grad and id(param) not in seen and not _is_dtensor(param):
                seen.add(id(param))
                out.append(param)
    return out


def all_reduce_gradients(modules: Iterable[nn.Module | None], ranks: Ranks) -> None:
    """Sum the replicated parameters' gradients over the ranks (one flat buffer per dtype).

    The losses were weighted by the global denominators, so the sum is the union's gradient. A rank that
    had nothing to back-propagate contributes zeros. FSDP's sharded layers reduce-scatter their own.
    """
    if not ranks.active:
        return
    params = replicated_parameters(modules)
    device = _device(ranks)
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for param in params:
        by_dtype.setdefault(param.dtype, []).append(param)
    for dtype, group in by_dtype.items():
        flat = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(device=device, dtype=dtype)
                for p in group
            ]
        )
        dist.all_reduce(flat)
        start = 0
        for p in group:
            n = p.numel()
            chunk = flat[start : start + n].view_as(p).to(p.device)
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
            start += n


def clip_sharded_grad_norm(modules: Iterable[nn.Module | None], max_norm: float, ranks: Ranks) -> float:
    """FSDP: the global gradient norm (sharded shards summed over ranks, replicated grads once), clipped."""
    mods = [m for m in modules if m is not None]
    sharded_sq, replicated_sq = 0.0, 0.0
    grads: list[Tensor] = []
    for module in mods:
        for param in module.parameters():
            if param.grad is None:
                continue
            if _is_dtensor(param.grad):
                local = param.grad.to_local()  # type: ignore[attr-defined]
                sharded_sq += float(local.float().pow(2).sum().item())
                grads.append(local)
            else:
                replicated_sq += float(param.grad.float().pow(2).sum().item())
                grads.append(param.grad)
    total = (sum_values([sharded_sq], ranks)[0] + replicated_sq) ** 0.5
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for grad in grads:
            grad.mul_(scale)
    return float(total)


def shard_policy(model: nn.Module, config: TrainConfig, ranks: Ranks) -> nn.Module:
    """`parallel.strategy='fsdp'`: shard each decoder layer over the ranks (gradients summed, not averaged)."""
    if not ranks.sharded:
        return model
    from torch.distributed.fsdp import fully_shard

    from worker.rl.training.logprobs import decoder_and_head

    decoder, _ = decoder_and_head(model)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"parallel.strategy='fsdp': {type(decoder).__name__} has no .layers to shard")
    if _device(ranks).type == "cuda":
        model.to(torch.device("cuda", torch.cuda.current_device()))
    for layer in layers:
        fully_shard(layer)
        layer.set_gradient_divide_factor(1.0)  # global denominators: a plain sum
        layer.set_force_sum_reduction_for_comms(True)  # ReduceOp.SUM (gloo has no PREMUL_SUM)
    return model


def full_weights(model: nn.Module, ranks: Ranks) -> dict[str, Tensor] | None:
    """FSDP: the whole state dict gathered (collective; every rank calls it), on CPU; None unless sharded."""
    if not ranks.sharded:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def check_rollout_engine(generator: Any, model: nn.Module, ranks: Ranks) -> None:
    """FSDP ranks roll out at their own pace: the engine must hold its own weights, not the sharded policy."""
    shares = getattr(generator, "shares_model_with", None)
    if ranks.sharded and shares is not None and shares(model):
        raise ValueError(
            "parallel.strategy='fsdp' shards the policy, so the rollout engine needs its own copy: run the HF "
            "engine in a compute dtype other than model.dtype (e.g. model.compute_dtype='bfloat16' over "
            "float32 weights) or engine.backend='vllm'; or use parallel.strategy='ddp'"
        )


class Gathered:
    """A whole (gathered) state dict standing in for a sharded model or optimizer at checkpoint time:
    `state_dict()` gives it to the writer, `load_state_dict` keeps what the reader loads."""

    config: Any
    """The model's HF config (written beside the weights); absent for an optimizer state."""

    def __init__(self, state: dict[str, Any], config: Any = None) -> None:
        self.state = state
        if config is not None:
            self.config = config
        self.loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> tuple[list[str], list[str]]:
        self.loaded = state
        return [], []


def gathered_state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[Gathered, Gathered]:
    """FSDP: whole model and optimizer states (collective; every rank calls it), on CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights, optim = get_state_dict(model, opt, options=options)
    return Gathered(dict(weights), getattr(model, "config", None)), Gathered(dict(optim))


def load_gathered(model: nn.Module, opt: torch.optim.Optimizer, weights: Gathered, optim: Gathered) -> None:
    """FSDP: load whole states (read by every rank) into the sharded model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    if weights.loaded is None:
        raise ValueError("the checkpoint gave no model weights to load")
    options = StateDictOptions(full_state_dict=True)
    set_state_dict(model, opt, model_state_dict=weights.loaded, optim_state_dict=optim.loaded or {}, options=options)
