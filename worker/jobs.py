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
from worker.store import EnvironmentSpec, RunSpec, RunStore

if TYPE_CHECKING:  # the RL core is imported inside each job: a cpu worker never loads torch for a ping
    from worker.rl.training.config import TrainConfig

logger = logging.getLogger(__name__)


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
        dataset_kind=dataset.get("kind"), dataset_location=dataset.get("location"),
        dataset_format=str(dataset.get("format") or "auto"),
        builtin_tools=tuple(t.source for t in env.tools if t.kind == "builtin"),
        max_turns=int(limits.get("max_turns", 3)), top_k=int(limits.get("top_k", 3)),
    )  # fmt: skip
    report: dict[str, Any] = validation.validate_environment(request)
    python_tools = [t.name for t in env.tools if t.kind == "python"]
    if python_tools:
        report["notes"] = [*report.get("notes", []), f"python tool(s) {', '.join(python_tools)}: use Test call"]
    return report


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


def _run_core(
    run_id: int,
    store: RunStore,
    *,
    hostname: str,
    runs_dir: Path,
    entry: CoreEntry,
    decoder: Callable[[Any], TokenDecoder | None] = token_decoder,
) -> Any:
    with running(store, run_id, hostname=hostname) as spec:
        config = resolve_config(spec)
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
        result = entry(
            config,
            run_dir=run_dir,
            resume_from=run_dir if resume else None,
            on_step=recorder.on_step,
            should_stop=recorder.should_stop,
        )
        recorder.register_checkpoints()
        store.save_result(run_id, _as_dict(result))
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
    """`worker.rl.training.trainer.train` with live metrics/trajectories/checkpoints; resumes from the run dir."""
    from worker.rl.training.trainer import train

    _run_core(run_id, store, hostname=hostname, runs_dir=runs_dir, entry=train, decoder=decoder)


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
        request = spec.eval_spec
        if request is None:
            raise ValueError(f"eval run {run_id} has no eval_spec; launch evaluations with POST /evaluations")

        def progress(done: int, total: int) -> None:
            store.set_progress(run_id, step=done, total_steps=total)

        report = evaluate_config(
            request, output_dir=runs_dir / f"run-{run_id}" / "eval", data_dir=data_dir, progress=progress
        )
        store.save_result(run_id, report)
        store.save_evaluation(run_id, report)
    store.set_status(run_id, "succeeded", owner=spec.owner_token)
    return report
