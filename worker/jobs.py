"""Job bodies: plain functions `(run_id, store, ...)` called by the thin Celery tasks (no Celery here).

Each job marks its run started, keeps a heartbeat thread going, does its work through
the RL core (imported lazily: a cpu worker never loads torch for a ping) and records
the outcome in the `RunStore`. Exceptions propagate: `RunTask.on_failure` marks the run failed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from backend.core.config import get_settings
from backend.core.db import utcnow
from worker.sandbox.limits import SandboxLimits
from worker.sandbox.pool import run_tool_source
from worker.store import EnvironmentSpec, EnvironmentVersionSpec, RewardModelStore, RunSpec, RunStore
from worker.tool_runner import ToolPool, pool_for_spec

if TYPE_CHECKING:  # the RL core is imported inside each job: a cpu worker never loads torch for a ping
    from worker.rl.training.config import TrainConfig

logger = logging.getLogger(__name__)

BASE_RECIPE = "quickstart"
"""The preset whose model/engine/algorithm/optim sections a run in a user environment starts from (no preset)."""


class Heartbeat:
    """Context manager: a daemon thread beating for the run's owner every `interval_s`, with a step watchdog.

    A beat that updates no row means this worker no longer owns the run (another claim took it over):
    beating stops and `lost` is set; the job sees it at its next step boundary and ends without
    touching the run. When the run's step count (or progress) has not moved for `step_timeout_s`,
    the watchdog marks the run failed (while it still owns it) and stops beating the same way.
    """

    def __init__(
        self, store: RunStore, run_id: int, owner: str, interval_s: float = 10.0, step_timeout_s: float | None = None
    ) -> None:
        self._store, self._run_id, self._owner, self._interval_s = store, run_id, owner, interval_s
        self._step_timeout_s = step_timeout_s
        self._stop = threading.Event()
        self.lost = threading.Event()
        self.reason = ""
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def _beat(self) -> None:
        last_seen: tuple[int, float] | None = None
        moved_at = time.monotonic()
        while not self._stop.wait(self._interval_s):
            try:
                seen = self._store.heartbeat(self._run_id, self._owner)
            except Exception:
                logger.exception("heartbeat of run %s failed", self._run_id)
                continue
            if seen is None:
                self._give_up(f"run {self._run_id} is no longer owned by this worker (another claim took it over)")
                return
            if seen != last_seen:
                last_seen, moved_at = seen, time.monotonic()
            elif self._step_timeout_s is not None and time.monotonic() - moved_at > self._step_timeout_s:
                error = (
                    f"no step progress for {self._step_timeout_s:.0f} s (stuck at step {seen[0]}): the job "
                    "looks hung and was stopped by the step watchdog; raise STUDIO_STEP_TIMEOUT_S if a "
                    "step really takes this long"
                )
                self._store.set_status(self._run_id, "failed", error=error, owner=self._owner)
                self._give_up(error)
                return

    def _give_up(self, reason: str) -> None:
        logger.warning("run %s: %s", self._run_id, reason)
        self.reason = reason
        self.lost.set()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def heartbeat_interval_s() -> float:
    """Every 10 s, or a quarter of `heartbeat_timeout_s` when that is shorter (a live run is never swept)."""
    return min(10.0, get_settings().heartbeat_timeout_s / 4)


class DuplicateDelivery(Exception):
    """The job's run is not claimable (finished, cancelled, or live elsewhere): this delivery must not run."""

    def __init__(self, run_id: int, status: str) -> None:
        super().__init__(f"run {run_id} is {status}; this delivery of its job is a duplicate and was skipped")
        self.run_id, self.status = run_id, status


class LeaseLost(Exception):
    """The job lost its run while working (taken over by another claim, or failed by the step watchdog).

    The job stops and leaves the run alone: its new owner (or the watchdog's verdict) decides its state.
    """

    def __init__(self, run_id: int, reason: str) -> None:
        super().__init__(f"run {run_id}: {reason}; this job stopped without touching the run")
        self.run_id = run_id


@contextmanager
def running(store: RunStore, run_id: int, *, hostname: str, heartbeat_s: float | None = None) -> Iterator[RunSpec]:
    """Claim the run (or raise `DuplicateDelivery`), heartbeat while the body runs, yield its spec.

    The spec's `owner_token` is this claim's lease: pass it as `owner=` when recording the outcome.
    Raises `LeaseLost` when the lease was lost while the body ran (whether the body finished or failed).
    """
    settings = get_settings()
    owner = store.claim(run_id, hostname=hostname, stale_after_s=settings.heartbeat_timeout_s)
    if owner is None:
        raise DuplicateDelivery(run_id, store.load_run(run_id).status)
    beat = Heartbeat(store, run_id, owner, heartbeat_s or heartbeat_interval_s(), settings.step_timeout_s)
    with beat:
        try:
            yield dataclasses.replace(store.load_run(run_id), owner_token=owner)
        except Exception as exc:
            if beat.lost.is_set() or not store.owns(run_id, owner):
                raise LeaseLost(run_id, beat.reason or "the run was taken over") from exc
            raise
    if beat.lost.is_set() or not store.owns(run_id, owner):
        raise LeaseLost(run_id, beat.reason or "the run was taken over")


def ping_job(run_id: int, store: RunStore, *, hostname: str) -> None:
    """The foundation round-trip: write who answered and when."""
    with running(store, run_id, hostname=hostname) as spec:
        store.save_result(
            run_id,
            {
                "hostname": hostname,
                "timestamp": utcnow().isoformat() + "Z",
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            },
        )
    store.set_status(run_id, "succeeded", owner=spec.owner_token)


def tool_test_job(run_id: int, store: RunStore, *, hostname: str, limits: SandboxLimits) -> None:
    """Call the tool once in the sandbox; the run fails with the tool's error, if any."""
    with running(store, run_id, hostname=hostname) as spec:
        tool = store.load_tool(int(spec.config["tool_id"]))
        if tool.kind != "python":
            raise ValueError(f"builtin tool {tool.source!r} runs inside an environment; validate the environment")
        function = str(tool.tool_schema.get("name", tool.name))
        outcome = run_tool_source(tool.source, function, dict(spec.config.get("arguments") or {}), limits)
        store.save_result(run_id, {**outcome.to_dict(), "tool_version": tool.version})
    store.set_status(run_id, "succeeded" if outcome.ok else "failed", error=outcome.error, owner=spec.owner_token)


def validate_env_job(run_id: int, store: RunStore, *, hostname: str, check: Callable[..., Any] | None = None) -> None:
    """Run the RL core's environment checker over the stored environment; the report goes into `result`.

    `check(environment_spec) -> dict` defaults to `check_environment_spec` (the core's `check_env`).
    """
    with running(store, run_id, hostname=hostname) as spec:
        report: Any
        if spec.environment_version_id is not None and check is None:
            model = str(spec.config.get("model") or "smollm2-135m")  # whose tokenizer counts the prompt
            report = check_environment_version(store.load_environment_version(spec.environment_version_id), model=model)
        else:
            env = store.load_environment(int(spec.config["environment_id"]))
            check = check or check_environment_spec
            report = check(env)
        is_dataclass = dataclasses.is_dataclass(report) and not isinstance(report, type)
        report_dict = dataclasses.asdict(report) if is_dataclass else dict(report)  # type: ignore[arg-type]
        store.save_result(run_id, report_dict)
    ok = bool(report_dict.get("ok", not report_dict.get("failures")))
    error = None if ok else "environment check failed"
    store.set_status(run_id, "succeeded" if ok else "failed", error=error, owner=spec.owner_token)


def check_environment_spec(env: EnvironmentSpec) -> dict[str, Any]:
    """The stored environment as the core's `EnvValidationRequest`, checked with `check_env` on a few tasks."""
    from worker.rl.envs import validation

    dataset = env.dataset or {}
    limits = env.limits or {}
    request = validation.EnvValidationRequest(
        dataset_kind=dataset.get("kind"),
        dataset_location=dataset.get("location"),
        dataset_format=str(dataset.get("format") or "auto"),
        builtin_tools=tuple(t.source for t in env.tools if t.kind == "builtin"),
        max_turns=int(limits.get("max_turns", 3)),
        top_k=int(limits.get("top_k", 3)),
    )
    report: dict[str, Any] = validation.validate_environment(request)
    python_tools = [t.name for t in env.tools if t.kind == "python"]
    if python_tools:
        report["notes"] = [*report.get("notes", []), f"python tool(s) {', '.join(python_tools)}: use Test call"]
    return report


def sandbox_limits() -> SandboxLimits:
    """The studio's sandbox settings (`STUDIO_TOOL_*`, `STUDIO_BWRAP_PATH`, `STUDIO_ALLOW_UNSANDBOXED_CODE`)."""
    return SandboxLimits.from_settings(get_settings())


def index_cache_dir() -> Path:
    """Where corpus indexes (BM25, dense embeddings) are cached by content hash (built once, shared by runs)."""
    return get_settings().cache_dir / "indexes"


def load_env_spec(version: EnvironmentVersionSpec) -> Any:
    """The stored version as the core's `EnvSpec` (strict: a bad stored spec names its field)."""
    from worker.rl.envs.spec import EnvSpec

    return EnvSpec.from_dict(version.spec)


def check_environment_version(version: EnvironmentVersionSpec, *, model: str = "smollm2-135m") -> dict[str, Any]:
    """The core's `check_spec` on the real env (user code sandboxed) plus the rendered prompt's token count."""
    from worker.rl.envs.spec_check import check_spec

    env_spec = load_env_spec(version)
    pool = pool_for_spec(env_spec, limits=sandbox_limits())
    try:
        report: dict[str, Any] = check_spec(env_spec, tool_runner=pool, index_cache_dir=index_cache_dir())
        report["prompt"] = rendered_prompt(env_spec, pool, model=model)
    finally:
        pool.close()
    report["environment_version"] = {"id": version.id, "version": version.version}
    return report


def rendered_prompt(env_spec: Any, pool: ToolPool, *, model: str) -> dict[str, Any]:
    """Turn 1 of the first task exactly as the model sees it (chat template applied) and its token count."""
    from worker.rl.envs import from_spec
    from worker.rl.generation.chat import ChatFormat
    from worker.rl.generation.tokens import load_tokenizer

    try:
        data = from_spec.load_env_data(env_spec)
        task = (data.heldout or data.train)[0]
        retriever = from_spec.build_retriever(env_spec, data.passages, index_cache_dir())
        env = from_spec.env_from_spec(env_spec, tool_runner=pool, retriever=retriever)
        messages = env.reset(task)
        chat = ChatFormat(load_tokenizer(model))
        ids = chat.prompt_ids(messages, env.tool_schemas) + chat.tokenizer.encode(env.prefill(0))
        env.close()
    except Exception as exc:  # the report says why instead of failing the whole check
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"text": chat.tokenizer.decode(ids), "tokens": len(ids), "model": model, "task_id": task.id}


def export_checkpoint_job(run_id: int, store: RunStore, *, hostname: str, runs_dir: Path) -> None:
    """Write the checkpoint as a `from_pretrained` folder under the run dir's `exports/`."""
    with running(store, run_id, hostname=hostname) as spec:
        from worker.rl.training.checkpoint import export_hf_model

        source = Path(spec.config["checkpoint_path"])
        out_dir = runs_dir / f"run-{spec.config['run_id']}" / "exports" / source.name
        export_hf_model(source, out_dir)
        store.save_result(run_id, {"export_path": str(out_dir)})
    store.set_status(run_id, "succeeded", owner=spec.owner_token)


def resolve_config(spec: RunSpec) -> TrainConfig:
    """Preset file + the run's overrides → a validated `TrainConfig` (ValueError names the bad field)."""
    from worker.rl.training.presets import resolve_run_config

    return resolve_run_config(spec.preset, spec.config)


def resolve_env_config(spec: RunSpec, env_spec: Any) -> Any:
    """A run in a user environment: the preset's recipe (`BASE_RECIPE` when none) with the task replaced by
    the environment and the rollout limits taken from it, then the run's own overrides. The rubric's
    reward-model terms become `task.reward_models` entries (before the run's own), and a step scorer or a
    step reward function turns process rewards on (`algorithm.process_reward_weight` 1.0 unless the recipe
    or the run sets it)."""
    from worker.rl.training.config import config_from_dict
    from worker.rl.training.config_loader import deep_merge
    from worker.rl.training.presets import preset_data
    from worker.rl.training.reward_models import environment_reward_models

    base = config_from_dict(preset_data(spec.preset or BASE_RECIPE)).to_dict()
    limits = env_spec.limits
    base["task"] = {"env": "qa_search", "source": f"environment:{env_spec.name}"}
    base["rollout"] = {
        **base.get("rollout", {}),
        "max_turns": limits.max_turns,
        "max_new_tokens_per_turn": limits.max_new_tokens_per_turn,
        "max_total_tokens": limits.max_total_tokens,
    }
    env_terms = [dataclasses.asdict(t) for t in environment_reward_models(env_spec)]
    has_steps = any(t["step"] for t in env_terms) or any(t.is_step for t in env_spec.rubric)
    if has_steps and not base["algorithm"].get("process_reward_weight"):
        base["algorithm"] = {**base["algorithm"], "process_reward_weight": 1.0}
    merged = deep_merge(base, spec.config)
    if env_terms:
        own = list((spec.config.get("task") or {}).get("reward_models") or [])
        merged["task"] = {**merged["task"], "reward_models": [*env_terms, *own]}
    return config_from_dict(merged)


def environment_summary(env_spec: Any, version: EnvironmentVersionSpec, components: Any) -> dict[str, Any]:
    """What the run trained in (stored in its result): tools, dataset sizes, rubric, the pinned version."""
    return {
        "version_id": version.id,
        "environment_id": version.environment_id,
        "version": version.version,
        "name": env_spec.name,
        "tools": [t.name for t in env_spec.tools],
        "train_tasks": len(components.train_tasks),
        "heldout_tasks": len(components.eval_tasks),
        "rubric": {t.name: t.weight for t in env_spec.rubric},
    }


_STEP_DIGITS = re.compile(r"(\d+)$")


TokenDecoder = Callable[[list[int]], list[str]]
"""Token ids → one decoded piece per id (the run's tokenizer), for the replay's `token_texts`."""


class StepRecorder:
    """The trainer's callbacks: store metrics, trajectories, progress/ETA and new checkpoints; poll cancel.

    `should_stop` is also true once `owner` (the job's lease) no longer holds the run, so a worker
    whose run was taken over stops at the next step boundary.

    Trajectories of a step already stored (a resumed run repeating it) are kept, not duplicated:
    the resumed step replays the same seeds, and the stored rows may already carry labels.
    """

    def __init__(
        self,
        store: RunStore,
        run_id: int,
        *,
        run_dir: Path,
        total_steps: int | None,
        decode: TokenDecoder | None = None,
        owner: str | None = None,
    ) -> None:
        self.store, self.run_id, self.run_dir, self.total_steps = store, run_id, run_dir, total_steps
        self.owner = owner
        self.lost = False
        self.decode = decode
        self.stopped = False
        self._seen: set[str] = set()
        self._stored_steps = store.trajectory_steps(run_id)
        self._start = time.monotonic()
        self._first_step: int | None = None

    def trajectory_dicts(self, trajectories: list[Any]) -> list[dict[str, Any]]:
        dicts = [t.to_dict() if hasattr(t, "to_dict") else dict(t) for t in trajectories]
        if self.decode is not None:
            for data in dicts:
                data["token_texts"] = self.decode(list(data.get("token_ids") or []))
        return dicts

    def on_step(self, step: int, metrics: dict[str, float], trajectories: list[Any]) -> None:
        self.store.append_metrics(self.run_id, step, {k: float(v) for k, v in metrics.items()})
        if step not in self._stored_steps:
            self.store.save_trajectories(self.run_id, step, self.trajectory_dicts(trajectories))
            self._stored_steps.add(step)
        self._first_step = step if self._first_step is None else self._first_step
        done = step - self._first_step + 1
        eta = None
        if self.total_steps:
            eta = (time.monotonic() - self._start) / done * max(0, self.total_steps - step)
        self.store.set_progress(self.run_id, step=step, total_steps=self.total_steps, eta_s=eta)
        self.register_checkpoints()

    def should_stop(self) -> bool:
        if self.owner is not None and not self.lost:
            self.lost = not self.store.owns(self.run_id, self.owner)
        self.stopped = self.stopped or self.lost or self.store.is_cancel_requested(self.run_id)
        return self.stopped

    def register_checkpoints(self) -> None:
        """Record checkpoint dirs the trainer wrote under `run_dir/checkpoints/` (names end in the step)."""
        root = self.run_dir / "checkpoints"
        if not root.is_dir():
            return
        for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            match = _STEP_DIGITS.search(path.name)
            if match and path.name not in self._seen:
                self._seen.add(path.name)
                self.store.add_checkpoint(self.run_id, int(match.group(1)), str(path))


def token_decoder(config: Any) -> TokenDecoder:
    """The run's tokenizer, loaded once per job, as a memoised id → piece decoder."""
    from worker.rl.generation.tokens import TokenPieces, load_tokenizer

    return TokenPieces(load_tokenizer(config.model.name_or_path))


def has_resume_state(run_dir: Path) -> bool:
    """A checkpoint (train) or a rollout state file to continue from; otherwise the run starts fresh."""
    return any(run_dir.glob("checkpoints/*/trainer_state.json")) or (run_dir / "rollout_state.json").is_file()


CoreEntry = Callable[..., Any]
"""`trainer.train` or `rollout_run.run_rollouts`: one keyword contract (run_dir, resume_from, on_step, should_stop)."""


@dataclasses.dataclass(frozen=True)
class EnvironmentComponents:
    """Picklable components builder for the spawned ranks of a multi-process run in a studio environment:
    each rank starts its own sandboxed tool pool (closed when the rank's process exits)."""

    config: Any
    env_spec: Any
    limits: SandboxLimits
    cache_dir: Path

    def __call__(self) -> Any:
        import atexit

        from worker.rl.training.build import build_components

        pool = pool_for_spec(self.env_spec, limits=self.limits)
        atexit.register(pool.close)
        return build_components(self.config, env_spec=self.env_spec, tool_runner=pool, index_cache_dir=self.cache_dir)


def _run_core(
    run_id: int,
    store: RunStore,
    *,
    hostname: str,
    runs_dir: Path,
    entry: CoreEntry,
    decoder: Callable[[Any], TokenDecoder | None] = token_decoder,
    ranks: bool = False,
) -> Any:
    """`ranks`: the entry takes `components_factory` (`trainer.train`, which runs `parallel.nproc` ranks)."""
    with running(store, run_id, hostname=hostname) as spec:
        version = store.load_environment_version(spec.environment_version_id) if spec.environment_version_id else None
        env_spec = load_env_spec(version) if version is not None else None
        config = resolve_config(spec) if env_spec is None else resolve_env_config(spec, env_spec)
        config = with_reward_model_paths(config, runs_dir)
        store.save_resolved_config(run_id, config.to_dict())
        run_dir = runs_dir / f"run-{run_id}"
        resume = has_resume_state(run_dir)
        recorder = StepRecorder(
            store,
            run_id,
            run_dir=run_dir,
            total_steps=_total_steps(config),
            decode=decoder(config),
            owner=spec.owner_token,
        )
        pool = pool_for_spec(env_spec, limits=sandbox_limits()) if env_spec is not None else None
        extra: dict[str, Any] = {}
        try:
            if env_spec is not None and pool is not None:
                from worker.rl.training.build import build_components

                extra["components"] = build_components(
                    config, env_spec=env_spec, tool_runner=pool, index_cache_dir=index_cache_dir()
                )
                if ranks and config.parallel.nproc > 1:  # the other ranks build their own (own tool pool)
                    limits, cache = sandbox_limits(), index_cache_dir()
                    extra["components_factory"] = EnvironmentComponents(config, env_spec, limits, cache)
            result = entry(
                config,
                run_dir=run_dir,
                resume_from=run_dir if resume else None,
                on_step=recorder.on_step,
                should_stop=recorder.should_stop,
                **extra,
            )
        finally:
            if pool is not None:
                pool.close()
        recorder.register_checkpoints()
        outcome = _as_dict(result)
        if version is not None and env_spec is not None:
            outcome["environment"] = environment_summary(env_spec, version, extra["components"])
        store.save_result(run_id, outcome)
    store.set_status(run_id, "cancelled" if recorder.stopped else "succeeded", owner=spec.owner_token)
    return result


def _total_steps(config: Any) -> int | None:
    steps = getattr(getattr(config, "optim", None), "total_steps", None)
    return int(steps) if steps else None


def _as_dict(result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        raw = dataclasses.asdict(result)
    elif isinstance(result, dict):
        raw = result
    else:
        raw = {"value": repr(result)}
    return {
        k: (v if isinstance(v, str | int | float | bool | list | dict | type(None)) else str(v)) for k, v in raw.items()
    }


def train_job(
    run_id: int,
    store: RunStore,
    *,
    hostname: str,
    runs_dir: Path,
    decoder: Callable[[Any], TokenDecoder | None] = token_decoder,
) -> None:
    """`worker.rl.training.trainer.train` with live metrics/trajectories/checkpoints; resumes from the run dir.

    A run whose config asks `parallel.nproc = N` runs N ranks: this process is rank 0 (lease, heartbeat,
    callbacks, cancel polling, database rows) and spawns the others; on a gpu worker the job's pool process
    sees `STUDIO_WORKER_GPUS_PER_JOB` GPUs, one per rank.
    """
    from worker.rl.training.trainer import train

    _run_core(run_id, store, hostname=hostname, runs_dir=runs_dir, entry=train, decoder=decoder, ranks=True)


def rollout_job(
    run_id: int,
    store: RunStore,
    *,
    hostname: str,
    runs_dir: Path,
    decoder: Callable[[Any], TokenDecoder | None] = token_decoder,
) -> None:
    """Rollouts with the run's policy, no updates (`run_rollouts`); stored like a train run's steps."""
    from worker.rl.training.rollout_run import run_rollouts

    _run_core(run_id, store, hostname=hostname, runs_dir=runs_dir, entry=run_rollouts, decoder=decoder)


def _evaluate_in_environment(spec: RunSpec, store: RunStore, *, runs_dir: Path) -> dict[str, Any]:
    """An eval run pinned to an environment version: the checkpoint (or base model) on its held-out split.

    Reads `model`, `checkpoint_path`, `limit` and `seed` from the run's typed `eval_spec`.
    """
    from worker.rl.evaluation.environment import evaluate_environment

    version = store.load_environment_version(int(spec.environment_version_id or 0))
    env_spec = load_env_spec(version)
    request = spec.eval_spec or {}
    model = str(request.get("model") or "smollm2-135m")
    pool = pool_for_spec(env_spec, limits=sandbox_limits())
    try:
        report: dict[str, Any] = evaluate_environment(
            env_spec,
            model=model,
            tool_runner=pool,
            output_dir=runs_dir / f"run-{spec.id}" / "eval",
            checkpoint_path=request.get("checkpoint_path"),
            limit=request.get("limit"),
            seed=int(request.get("seed") or 0),
            index_cache_dir=index_cache_dir(),
            progress=lambda done, total: store.set_progress(spec.id, step=done, total_steps=total),
        )
    finally:
        pool.close()
    report["environment"]["version_id"] = version.id
    return report


def evaluate_job(
    run_id: int, store: RunStore, *, hostname: str, runs_dir: Path, data_dir: Path | None = None
) -> dict[str, Any]:
    """`evaluate_config(run.eval_spec)`; the `build_report` dict is the run's result and its evaluation.

    Default dataset files come from `data_dir`, else the `benchmark_data_dir` setting (empty = not configured:
    dataset names then mean hub downloads, and an offline worker says which setting to fill).
    """
    from worker.rl.evaluation.job import evaluate_config

    if data_dir is None:
        data_dir = get_settings().benchmark_data_dir
    with running(store, run_id, hostname=hostname) as spec:
        if spec.environment_version_id is not None:
            report = _evaluate_in_environment(spec, store, runs_dir=runs_dir)
        else:
            request = spec.eval_spec
            if request is None:
                raise ValueError(f"eval run {run_id} has no eval_spec; launch evaluations with POST /evaluations")

            def progress(done: int, total: int) -> None:
                store.set_progress(run_id, step=done, total_steps=total)

            def keep_trajectories(trajectories: list[dict[str, Any]]) -> None:
                if trajectories and 0 not in store.trajectory_steps(run_id):  # a redelivered run stores them once
                    store.save_trajectories(run_id, 0, trajectories)

            report = evaluate_config(
                request,
                output_dir=runs_dir / f"run-{run_id}" / "eval",
                data_dir=data_dir,
                progress=progress,
                trajectories=keep_trajectories,
                index_cache_dir=index_cache_dir(),
            )
        store.save_result(run_id, report)
        store.save_evaluation(run_id, report)
    store.set_status(run_id, "succeeded", owner=spec.owner_token)
    return report


# ------------------------------------------------------------------ reward models (issue #15)

RM_SCORE_LIMIT = 2000
"""Newest trajectories of the labeled runs scored after training (the labeling queue's disagreement order)."""


def reward_model_dir(runs_dir: Path, reward_model_id: int) -> Path:
    """Where reward model `<id>` (its `rm_train` run id) keeps its artifact."""
    return runs_dir / "reward-models" / f"rm-{reward_model_id}"


def with_reward_model_paths(config: Any, runs_dir: Path) -> Any:
    """`task.reward_models` entries given by id get their artifact path; a missing artifact is an error."""
    terms = getattr(getattr(config, "task", None), "reward_models", ())
    if not terms:
        return config
    filled = []
    for term in terms:
        if term.path is None and term.id is not None:
            path = reward_model_dir(runs_dir, term.id)
            if not (path / "reward_model.json").is_file():
                raise FileNotFoundError(
                    f"task.reward_models: reward model {term.id} has no artifact at {path}; "
                    "train it first (POST /reward-models) or give its path"
                )
            term = dataclasses.replace(term, path=str(path))
        filled.append(term)
    return dataclasses.replace(config, task=dataclasses.replace(config.task, reward_models=tuple(filled)))


def rm_train_job(
    run_id: int, store: RewardModelStore, *, hostname: str, runs_dir: Path, score_limit: int = RM_SCORE_LIMIT
) -> dict[str, Any]:
    """Train a reward model on the labels of `config.label_run_ids`; its result holds metrics, provenance, scores.

    The artifact goes to `reward_model_dir(runs_dir, run_id)`; a redelivered job replaces its own half-done dir.
    """
    from worker.rl.reward_model import pairs as pairs_mod
    from worker.rl.reward_model import scorer as scorer_mod
    from worker.rl.reward_model import train as train_mod

    with running(store, run_id, hostname=hostname) as spec:
        run_ids = [int(i) for i in spec.config.get("label_run_ids") or []]
        if not run_ids:
            raise ValueError("rm_train needs config.label_run_ids: the runs whose labels make the pairs")
        config = train_mod.RewardModelConfig.from_dict(dict(spec.config.get("reward_model") or {}))
        records = store.load_label_records(run_ids)
        out_dir = reward_model_dir(runs_dir, run_id)
        for stale in (out_dir, out_dir.with_name(out_dir.name + ".tmp")):
            if stale.exists():
                shutil.rmtree(stale)
        provenance = {"reward_model_id": run_id, "label_run_ids": run_ids, "labels": len(records)}
        report = train_mod.train_reward_model(records, config, out_dir, provenance=provenance)
        scorer = scorer_mod.RewardModelScorer.load(out_dir, device="cuda" if config.device == "cuda" else "cpu")
        # a trajectory model's scores order the labeling queue and show on the trajectory page; a step
        # scorer's per-turn scores are process rewards, not a trajectory score
        trajectories = store.load_trajectory_data(run_ids, score_limit) if config.kind == "trajectory" else []
        scores = scorer.score_texts([pairs_mod.record_text(data, scorer.view) for _, data in trajectories])
        result = {
            "artifact_dir": str(out_dir),
            "metrics": dataclasses.asdict(report),
            "base_model": config.base_model,
            "kind": config.kind,
            "input": "text",
            "tokenizer": scorer.meta.get("tokenizer"),
            "label_ids": scorer.meta.get("label_ids", []),
            "scores": {str(i): s for (i, _), s in zip(trajectories, scores, strict=True)},
        }
        store.save_result(run_id, result)
    store.set_status(run_id, "succeeded", owner=spec.owner_token)
    return result
