"""Job bodies: plain functions `(run_id, store, ...)` called by the thin Celery tasks (no Celery here).

Each job marks its run started, keeps a heartbeat thread going, does its work through
the RL core (imported lazily: a cpu worker never loads torch for a ping) and records
the outcome in the `RunStore`. Exceptions propagate: `RunTask.on_failure` marks the run failed.
"""

from __future__ import annotations

import dataclasses
import importlib
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
from typing import Any

from backend.core.config import get_settings
from backend.core.db import utcnow
from worker.sandbox import SandboxLimits, run_tool_source
from worker.store import EnvironmentSpec, RewardModelStore, RunSpec, RunStore

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESET_FILES = {"quickstart": "quickstart.toml", "hotpotqa_cpu": "hotpotqa_cpu.toml",
                "paper": "paper_qwen2.5_3b_grpo.toml"}  # fmt: skip
"""Run presets (`RunCreate.preset`) → files under `configs/`."""

TRAIN_ENTRY = "worker.rl.training.trainer:train"
ROLLOUT_ENTRY = "worker.rl.training.rollout_job:run_rollouts"
"""RL-core entry points of train/rollout runs (one keyword contract: run_dir, resume_from, on_step, should_stop)."""
EVALUATE_ENTRY = "worker.rl.evaluation.job:evaluate_config"
VALIDATE_ENTRY = "worker.rl.envs.validation:validate_environment"
EVAL_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
"""Where the default benchmark samples live (`../shared/data` beside the repo), in their release formats."""


class Heartbeat:
    """Context manager: a daemon thread calling `store.heartbeat(run_id)` every `interval_s`."""

    def __init__(self, store: RunStore, run_id: int, interval_s: float = 10.0) -> None:
        self._store, self._run_id, self._interval_s = store, run_id, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._store.heartbeat(self._run_id)
            except Exception:
                logger.exception("heartbeat of run %s failed", self._run_id)

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


@contextmanager
def running(store: RunStore, run_id: int, *, hostname: str, heartbeat_s: float | None = None) -> Iterator[RunSpec]:
    """Claim the run (or raise `DuplicateDelivery`), heartbeat while the body runs, yield its spec."""
    if not store.claim(run_id, hostname=hostname, stale_after_s=get_settings().heartbeat_timeout_s):
        raise DuplicateDelivery(run_id, store.load_run(run_id).status)
    with Heartbeat(store, run_id, heartbeat_s or heartbeat_interval_s()):
        yield store.load_run(run_id)


def ping_job(run_id: int, store: RunStore, *, hostname: str) -> None:
    """The foundation round-trip: write who answered and when."""
    with running(store, run_id, hostname=hostname):
        store.save_result(run_id, {"hostname": hostname, "timestamp": utcnow().isoformat() + "Z",
                                   "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")})  # fmt: skip
    store.set_status(run_id, "succeeded")


def tool_test_job(run_id: int, store: RunStore, *, hostname: str, limits: SandboxLimits) -> None:
    """Call the tool once in the sandbox; the run fails with the tool's error, if any."""
    with running(store, run_id, hostname=hostname) as spec:
        tool = store.load_tool(int(spec.config["tool_id"]))
        if tool.kind != "python":
            raise ValueError(f"builtin tool {tool.source!r} runs inside an environment; validate the environment")
        function = str(tool.tool_schema.get("name", tool.name))
        outcome = run_tool_source(tool.source, function, dict(spec.config.get("arguments") or {}), limits)
        store.save_result(run_id, {**outcome.to_dict(), "tool_version": tool.version})
    store.set_status(run_id, "succeeded" if outcome.ok else "failed", error=outcome.error)


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
    store.set_status(run_id, "succeeded" if ok else "failed", error=None if ok else "environment check failed")


def check_environment_spec(env: EnvironmentSpec) -> dict[str, Any]:
    """The stored environment as the core's `EnvValidationRequest`, checked with `check_env` on a few tasks."""
    validation = importlib.import_module("worker.rl.envs.validation")
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
        export_hf_model = _resolve("worker.rl.training.checkpoint:export_hf_model")
        source = Path(spec.config["checkpoint_path"])
        out_dir = runs_dir / f"run-{spec.config['run_id']}" / "exports" / source.name
        export_hf_model(source, out_dir)
        store.save_result(run_id, {"export_path": str(out_dir)})
    store.set_status(run_id, "succeeded")


def _resolve(entry: str) -> Callable[..., Any]:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` on top of `base`, section by section."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_config(spec: RunSpec) -> Any:
    """Preset file + the run's overrides → a validated `TrainConfig` (ValueError names the bad field)."""
    config_mod = importlib.import_module("worker.rl.training.config")
    base: dict[str, Any] = {}
    if spec.preset:
        if spec.preset not in PRESET_FILES:
            raise ValueError(f"preset {spec.preset!r} is unknown; valid: {', '.join(PRESET_FILES)}")
        base = config_mod.load_config(REPO_ROOT / "configs" / PRESET_FILES[spec.preset]).to_dict()
    overrides = {k: v for k, v in spec.config.items() if not k.startswith("_")}
    return config_mod.config_from_dict(deep_merge(base, overrides))


_STEP_DIGITS = re.compile(r"(\d+)$")


TokenDecoder = Callable[[list[int]], list[str]]
"""Token ids → one decoded piece per id (the run's tokenizer), for the replay's `token_texts`."""


class StepRecorder:
    """The trainer's callbacks: store metrics, trajectories, progress/ETA and new checkpoints; poll cancel.

    Trajectories of a step already stored (a resumed run repeating it) are kept, not duplicated:
    the resumed step replays the same seeds, and the stored rows may already carry labels.
    """

    def __init__(self, store: RunStore, run_id: int, *, run_dir: Path, total_steps: int | None,
                 decode: TokenDecoder | None = None) -> None:  # fmt: skip
        self.store, self.run_id, self.run_dir, self.total_steps = store, run_id, run_dir, total_steps
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
        self.stopped = self.stopped or self.store.is_cancel_requested(self.run_id)
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
    tokens = importlib.import_module("worker.rl.generation.tokens")
    return tokens.TokenPieces(tokens.load_tokenizer(config.model.name_or_path))  # type: ignore[no-any-return]


def _kept_keys(spec: RunSpec) -> dict[str, Any]:
    """`_`-prefixed request keys (e.g. `_eval`) survive the resolved config being stored over the request."""
    return {k: v for k, v in spec.config.items() if k.startswith("_")}


def has_resume_state(run_dir: Path) -> bool:
    """A checkpoint (train) or a rollout state file to continue from; otherwise the run starts fresh."""
    return any(run_dir.glob("checkpoints/*/trainer_state.json")) or (run_dir / "rollout_state.json").is_file()


def _run_core(run_id: int, store: RunStore, *, hostname: str, runs_dir: Path, entry: str,
              decoder: Callable[[Any], TokenDecoder | None] = token_decoder) -> Any:  # fmt: skip
    with running(store, run_id, hostname=hostname) as spec:
        config = with_reward_model_paths(resolve_config(spec), runs_dir)  # issue #15
        store.save_config(run_id, {**config.to_dict(), **_kept_keys(spec)})
        run_dir = runs_dir / f"run-{run_id}"
        resume = has_resume_state(run_dir)
        recorder = StepRecorder(store, run_id, run_dir=run_dir, total_steps=_total_steps(config),
                                decode=decoder(config))  # fmt: skip
        result = _resolve(entry)(
            config, run_dir=run_dir, resume_from=run_dir if resume else None,
            on_step=recorder.on_step, should_stop=recorder.should_stop,
        )  # fmt: skip
        recorder.register_checkpoints()
        store.save_result(run_id, _as_dict(result))
    store.set_status(run_id, "cancelled" if recorder.stopped else "succeeded")
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


def train_job(run_id: int, store: RunStore, *, hostname: str, runs_dir: Path,
              decoder: Callable[[Any], TokenDecoder | None] = token_decoder) -> None:  # fmt: skip
    """`worker.rl.training.trainer.train` with live metrics/trajectories/checkpoints; resumes from the run dir."""
    _run_core(run_id, store, hostname=hostname, runs_dir=runs_dir, entry=TRAIN_ENTRY, decoder=decoder)


def rollout_job(run_id: int, store: RunStore, *, hostname: str, runs_dir: Path,
                decoder: Callable[[Any], TokenDecoder | None] = token_decoder) -> None:  # fmt: skip
    """Rollouts with the run's policy, no updates (`run_rollouts`); stored like a train run's steps."""
    _run_core(run_id, store, hostname=hostname, runs_dir=runs_dir, entry=ROLLOUT_ENTRY, decoder=decoder)


def evaluate_job(
    run_id: int, store: RunStore, *, hostname: str, runs_dir: Path, data_dir: Path = EVAL_DATA_DIR
) -> dict[str, Any]:
    """`evaluate_config(config["_eval"])`; the `build_report` dict is the run's result and its evaluation."""
    with running(store, run_id, hostname=hostname) as spec:
        request = spec.config.get("_eval")
        if not isinstance(request, dict):
            raise ValueError("eval run config needs an `_eval` object (datasets, methods, limit, seed, checkpoint_*)")
        model = (spec.config.get("model") or {}).get("name_or_path")

        def progress(done: int, total: int) -> None:
            store.set_progress(run_id, step=done, total_steps=total)

        report: dict[str, Any] = _resolve(EVALUATE_ENTRY)(
            request, output_dir=runs_dir / f"run-{run_id}" / "eval", data_dir=data_dir, progress=progress, model=model
        )
        store.save_result(run_id, report)
        store.save_evaluation(run_id, report)
    store.set_status(run_id, "succeeded")
    return report


# ------------------------------------------------------------------ reward models (issue #15)

RM_TRAIN_ENTRY = "worker.rl.reward_model.train"
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
                raise FileNotFoundError(f"task.reward_models: reward model {term.id} has no artifact at {path}; "
                                        "train it first (POST /reward-models) or give its path")  # fmt: skip
            term = dataclasses.replace(term, path=str(path))
        filled.append(term)
    return dataclasses.replace(config, task=dataclasses.replace(config.task, reward_models=tuple(filled)))


def rm_train_job(run_id: int, store: RewardModelStore, *, hostname: str, runs_dir: Path,
                 score_limit: int = RM_SCORE_LIMIT) -> dict[str, Any]:  # fmt: skip
    """Train a reward model on the labels of `config.label_run_ids`; its result holds metrics, provenance, scores.

    The artifact goes to `reward_model_dir(runs_dir, run_id)`; a redelivered job replaces its own half-done dir.
    """
    with running(store, run_id, hostname=hostname) as spec:
        train_mod = importlib.import_module(RM_TRAIN_ENTRY)
        scorer_mod = importlib.import_module("worker.rl.reward_model.scorer")
        pairs_mod = importlib.import_module("worker.rl.reward_model.pairs")
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
        trajectories = store.load_trajectory_data(run_ids, score_limit)
        scores = scorer.score_texts([pairs_mod.record_text(data, scorer.view) for _, data in trajectories])
        result = {
            "artifact_dir": str(out_dir), "metrics": dataclasses.asdict(report), "base_model": config.base_model,
            "tokenizer": scorer.meta.get("tokenizer"), "label_ids": scorer.meta.get("label_ids", []),
            "scores": {str(i): s for (i, _), s in zip(trajectories, scores, strict=True)},
        }  # fmt: skip
        store.save_result(run_id, result)
    store.set_status(run_id, "succeeded")
    return result
