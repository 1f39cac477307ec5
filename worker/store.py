"""Where jobs persist their progress: the `RunStore` protocol, `SqlRunStore` and `MemoryRunStore`.

`SqlRunStore` is the only worker code that touches the database (through
`backend.core.db` sessions and `backend.crud`); each call is one short
transaction so the API sees progress live. `MemoryRunStore` keeps everything in
dicts for tests and the CLI.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select

from backend.core.db import session_scope, utcnow
from backend.crud import datasets as datasets_crud
from backend.crud import environments as versions_crud
from backend.crud import labels as labels_crud
from backend.crud import runs as runs_crud
from backend.crud import tools as tools_crud
from backend.crud import trajectories as traj_crud
from backend.models.trajectory import Trajectory as TrajectoryRow

JSON = dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    id: int
    name: str
    kind: str
    source: str
    params: JSON
    tool_schema: JSON
    version: int


@dataclass(frozen=True)
class EnvironmentSpec:
    id: int
    name: str
    tools: tuple[ToolSpec, ...]
    dataset: JSON | None
    """`{"kind", "location", "format"}` of the dataset, when one is attached."""
    rubric: JSON
    limits: JSON


@dataclass(frozen=True)
class EnvironmentVersionSpec:
    """One immutable environment version: its resolved spec (`worker.rl.envs.spec.EnvSpec.from_dict` shape)."""

    id: int
    environment_id: int
    version: int
    spec: JSON


@dataclass(frozen=True)
class RunSpec:
    """What a job needs to know about its run row."""

    id: int
    kind: str
    name: str
    status: str
    preset: str | None
    config: JSON
    """The request (`Run.requested_config`): preset overrides, or a job's arguments."""
    environment_id: int | None
    eval_spec: JSON | None = None
    """An eval run's typed request (`Run.eval_spec`)."""
    owner_token: str | None = None
    """The lease id of the claim that holds the run."""
    environment_version_id: int | None = None
    """The pinned environment version (its spec is what the job builds the env from)."""


class RunStore(Protocol):
    def load_run(self, run_id: int) -> RunSpec: ...
    def load_tool(self, tool_id: int) -> ToolSpec: ...
    def load_environment(self, environment_id: int) -> EnvironmentSpec: ...
    def load_environment_version(self, version_id: int) -> EnvironmentVersionSpec: ...
    def claim(self, run_id: int, *, hostname: str, stale_after_s: float) -> str | None: ...
    def set_status(self, run_id: int, status: str, *, error: str | None = None, owner: str | None = None) -> bool: ...
    def set_progress(self, run_id: int, *, step: int, total_steps: int | None, eta_s: float | None = None) -> None: ...
    def heartbeat(self, run_id: int, owner: str) -> tuple[int, float] | None: ...
    def owns(self, run_id: int, owner: str) -> bool: ...
    def append_metrics(self, run_id: int, step: int, values: dict[str, float]) -> None: ...
    def save_trajectories(self, run_id: int, step: int, trajectories: Sequence[JSON]) -> int: ...
    def trajectory_steps(self, run_id: int) -> set[int]: ...
    def add_checkpoint(self, run_id: int, step: int, path: str) -> None: ...
    def save_result(self, run_id: int, result: JSON) -> None: ...
    def save_resolved_config(self, run_id: int, config: JSON) -> None: ...
    def save_evaluation(self, run_id: int, results: JSON) -> None: ...
    def is_cancel_requested(self, run_id: int) -> bool: ...
    def sweep_stale_runs(self, timeout_s: float, auto_resume_attempts: int) -> runs_crud.StaleSweep: ...
    def queued_runs_to_check(self, older_than_s: float) -> list[runs_crud.QueuedRun]: ...
    def take_requeue(self, run_id: int, old_task_id: str | None) -> str | None: ...


class RewardModelStore(RunStore, Protocol):
    """A `RunStore` that also reads labels and trajectories (what `rm_train` needs)."""

    def load_label_records(self, run_ids: Sequence[int]) -> list[JSON]: ...
    def load_trajectory_data(self, run_ids: Sequence[int], limit: int) -> list[tuple[int, JSON]]: ...


def _tool_spec(tool: Any) -> ToolSpec:
    return ToolSpec(tool.id, tool.name, tool.kind, tool.source, dict(tool.params), dict(tool.tool_schema), tool.version)


class SqlRunStore:
    """`RunStore` over the studio database (URL from settings)."""

    def load_run(self, run_id: int) -> RunSpec:
        with session_scope() as s:
            r = runs_crud.get_run(s, run_id=run_id)
            eval_spec = dict(r.eval_spec) if r.eval_spec is not None else None
            return RunSpec(
                r.id,
                r.kind,
                r.name,
                r.status,
                r.preset,
                dict(r.requested_config),
                r.environment_id,
                eval_spec,
                r.owner_token,
                r.environment_version_id,
            )

    def load_tool(self, tool_id: int) -> ToolSpec:
        with session_scope() as s:
            return _tool_spec(tools_crud.get_tool(s, tool_id=tool_id))

    def load_environment(self, environment_id: int) -> EnvironmentSpec:
        with session_scope() as s:
            env = datasets_crud.get_environment(s, environment_id=environment_id)
            tools = tuple(_tool_spec(tools_crud.get_tool(s, tool_id=t)) for t in env.tool_ids)
            dataset = None
            if env.dataset_id is not None:
                d = datasets_crud.get_dataset(s, dataset_id=env.dataset_id)
                dataset = {"kind": d.kind, "location": d.location, "format": d.format}
            return EnvironmentSpec(env.id, env.name, tools, dataset, dict(env.rubric), dict(env.limits))

    def load_environment_version(self, version_id: int) -> EnvironmentVersionSpec:
        with session_scope() as s:
            v = versions_crud.get_version_by_id(s, version_id=version_id)
            return EnvironmentVersionSpec(v.id, v.environment_id, v.version, dict(v.spec))

    def claim(self, run_id: int, *, hostname: str, stale_after_s: float) -> str | None:
        with session_scope() as s:
            return runs_crud.claim_run(s, run_id=run_id, hostname=hostname, stale_after_s=stale_after_s)

    def set_status(self, run_id: int, status: str, *, error: str | None = None, owner: str | None = None) -> bool:
        """With `owner`, only while that lease still holds the run (False when it lost it)."""
        with session_scope() as s:
            if owner is not None:
                return runs_crud.finish_owned(s, run_id=run_id, owner=owner, status=status, error=error)
            runs_crud.set_status(s, run_id=run_id, status=status, error=error)
            return True

    def set_progress(self, run_id: int, *, step: int, total_steps: int | None, eta_s: float | None = None) -> None:
        with session_scope() as s:
            runs_crud.set_progress(s, run_id=run_id, step=step, total_steps=total_steps, eta_s=eta_s)

    def heartbeat(self, run_id: int, owner: str) -> tuple[int, float] | None:
        with session_scope() as s:
            return runs_crud.heartbeat(s, run_id=run_id, owner=owner)

    def owns(self, run_id: int, owner: str) -> bool:
        with session_scope() as s:
            return runs_crud.owns(s, run_id=run_id, owner=owner)

    def append_metrics(self, run_id: int, step: int, values: dict[str, float]) -> None:
        with session_scope() as s:
            runs_crud.append_metrics(s, run_id=run_id, step=step, values=values)

    def save_trajectories(self, run_id: int, step: int, trajectories: Sequence[JSON]) -> int:
        with session_scope() as s:
            return traj_crud.bulk_insert(s, run_id=run_id, step=step, trajectories=trajectories)

    def trajectory_steps(self, run_id: int) -> set[int]:
        """Steps that already have stored trajectories (a resumed run does not store them twice)."""
        with session_scope() as s:
            return set(s.scalars(select(TrajectoryRow.step).where(TrajectoryRow.run_id == run_id).distinct()))

    def add_checkpoint(self, run_id: int, step: int, path: str) -> None:
        with session_scope() as s:
            runs_crud.add_checkpoint(s, run_id=run_id, step=step, path=path)

    def save_result(self, run_id: int, result: JSON) -> None:
        with session_scope() as s:
            runs_crud.save_result(s, run_id=run_id, result=result)

    def save_resolved_config(self, run_id: int, config: JSON) -> None:
        with session_scope() as s:
            runs_crud.save_resolved_config(s, run_id=run_id, config=config)

    def save_evaluation(self, run_id: int, results: JSON) -> None:
        with session_scope() as s:
            runs_crud.add_evaluation(s, run_id=run_id, results=results)

    def is_cancel_requested(self, run_id: int) -> bool:
        with session_scope() as s:
            return runs_crud.is_cancel_requested(s, run_id=run_id)

    def sweep_stale_runs(self, timeout_s: float, auto_resume_attempts: int) -> runs_crud.StaleSweep:
        with session_scope() as s:
            return runs_crud.sweep_stale_runs(s, timeout_s=timeout_s, auto_resume_attempts=auto_resume_attempts)

    def queued_runs_to_check(self, older_than_s: float) -> list[runs_crud.QueuedRun]:
        with session_scope() as s:
            return runs_crud.queued_runs_to_check(s, older_than_s=older_than_s)

    def take_requeue(self, run_id: int, old_task_id: str | None) -> str | None:
        with session_scope() as s:
            return runs_crud.take_requeue(s, run_id=run_id, old_task_id=old_task_id)

    # ---- labels and trajectories for reward-model training (issue #15)
    def load_label_records(self, run_ids: Sequence[int]) -> list[JSON]:
        """The runs' labels in the export format (`backend.crud.labels.label_record`), oldest first."""
        with session_scope() as s:
            return list(labels_crud.iter_label_records(s, run_ids=run_ids))

    def load_trajectory_data(self, run_ids: Sequence[int], limit: int) -> list[tuple[int, JSON]]:
        """(id, `Trajectory.to_dict()`) of the runs' newest `limit` trajectories."""
        with session_scope() as s:
            query = select(TrajectoryRow).where(TrajectoryRow.run_id.in_(list(run_ids)))
            rows = s.scalars(query.order_by(TrajectoryRow.id.desc()).limit(limit))
            return [(row.id, row.data) for row in rows]


@dataclass
class MemoryRun:
    spec: RunSpec
    status: str = "queued"
    error: str | None = None
    hostname: str | None = None
    owner: str | None = None
    step: int = 0
    total_steps: int | None = None
    heartbeat_at: datetime | None = None
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    trajectories: list[tuple[int, JSON]] = field(default_factory=list)
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    result: JSON | None = None
    resolved_config: JSON | None = None
    evaluations: list[JSON] = field(default_factory=list)
    cancel_requested: bool = False
    task_id: str | None = None


class MemoryRunStore:
    """`RunStore` in memory (thread-safe): tests and the DB-less CLI. Its clock is this process's."""

    def __init__(self) -> None:
        self.runs: dict[int, MemoryRun] = {}
        self.tools: dict[int, ToolSpec] = {}
        self.environments: dict[int, EnvironmentSpec] = {}
        self.environment_versions: dict[int, EnvironmentVersionSpec] = {}
        self.label_records: list[JSON] = []
        """Labels in the export format, for `rm_train` (`load_label_records` filters them by run)."""
        self._lock = threading.Lock()

    def add_run(
        self,
        kind: str,
        *,
        config: JSON | None = None,
        preset: str | None = None,
        environment_id: int | None = None,
        eval_spec: JSON | None = None,
        environment_version_id: int | None = None,
    ) -> int:
        run_id = len(self.runs) + 1
        spec = RunSpec(
            run_id,
            kind,
            f"{kind}-{run_id}",
            "queued",
            preset,
            dict(config or {}),
            environment_id,
            eval_spec,
            None,
            environment_version_id,
        )
        self.runs[run_id] = MemoryRun(spec)
        return run_id

    def load_run(self, run_id: int) -> RunSpec:
        run = self.runs[run_id]
        return dataclasses.replace(run.spec, status=run.status, owner_token=run.owner)

    def load_tool(self, tool_id: int) -> ToolSpec:
        return self.tools[tool_id]

    def load_environment(self, environment_id: int) -> EnvironmentSpec:
        return self.environments[environment_id]

    def add_environment_version(self, spec: JSON, *, environment_id: int = 1, version: int = 1) -> int:
        version_id = len(self.environment_versions) + 1
        self.environment_versions[version_id] = EnvironmentVersionSpec(version_id, environment_id, version, spec)
        return version_id

    def load_environment_version(self, version_id: int) -> EnvironmentVersionSpec:
        return self.environment_versions[version_id]

    def claim(self, run_id: int, *, hostname: str, stale_after_s: float) -> str | None:
        with self._lock:
            run = self.runs[run_id]
            silent = run.heartbeat_at is None or run.heartbeat_at < utcnow() - timedelta(seconds=stale_after_s)
            if run.status != "queued" and not (run.status in ("running", "cancelling") and silent):
                return None
            run.status, run.hostname, run.heartbeat_at = "running", hostname, utcnow()
            run.owner = uuid.uuid4().hex
            return run.owner

    def set_status(self, run_id: int, status: str, *, error: str | None = None, owner: str | None = None) -> bool:
        with self._lock:
            run = self.runs[run_id]
            if owner is not None and run.owner != owner:
                return False
            run.status = status
            run.error = error if error is not None else run.error
            if status in runs_crud.FINISHED_STATUSES:
                run.owner = None
            return True

    def set_progress(self, run_id: int, *, step: int, total_steps: int | None, eta_s: float | None = None) -> None:
        self.runs[run_id].step, self.runs[run_id].total_steps = step, total_steps

    def heartbeat(self, run_id: int, owner: str) -> tuple[int, float] | None:
        with self._lock:
            run = self.runs[run_id]
            if run.owner != owner or run.status not in ("running", "cancelling"):
                return None
            run.heartbeat_at = utcnow()
            return run.step, (run.step / run.total_steps if run.total_steps else 0.0)

    def owns(self, run_id: int, owner: str) -> bool:
        run = self.runs[run_id]
        return run.owner == owner and run.status in ("running", "cancelling")

    def append_metrics(self, run_id: int, step: int, values: dict[str, float]) -> None:
        self.runs[run_id].metrics[step] = dict(values)

    def save_trajectories(self, run_id: int, step: int, trajectories: Sequence[JSON]) -> int:
        with self._lock:
            self.runs[run_id].trajectories.extend((step, t) for t in trajectories)
        return len(trajectories)

    def trajectory_steps(self, run_id: int) -> set[int]:
        with self._lock:
            return {step for step, _ in self.runs[run_id].trajectories}

    def add_checkpoint(self, run_id: int, step: int, path: str) -> None:
        if (step, path) not in self.runs[run_id].checkpoints:
            self.runs[run_id].checkpoints.append((step, path))

    def save_result(self, run_id: int, result: JSON) -> None:
        self.runs[run_id].result = result

    def save_resolved_config(self, run_id: int, config: JSON) -> None:
        self.runs[run_id].resolved_config = dict(config)

    def save_evaluation(self, run_id: int, results: JSON) -> None:
        self.runs[run_id].evaluations.append(results)

    def is_cancel_requested(self, run_id: int) -> bool:
        return self.runs[run_id].cancel_requested

    def sweep_stale_runs(self, timeout_s: float, auto_resume_attempts: int) -> runs_crud.StaleSweep:
        """Fails silent runs (no automatic resume in memory: nothing would enqueue it)."""
        cutoff = utcnow() - timedelta(seconds=timeout_s)
        with self._lock:
            stale = [i for i, r in self.runs.items() if r.status == "running" and (r.heartbeat_at or cutoff) < cutoff]
            for run_id in stale:
                run = self.runs[run_id]
                run.status, run.error, run.owner = "failed", "worker stopped sending heartbeats", None
        return runs_crud.StaleSweep(failed=stale)

    def queued_runs_to_check(self, older_than_s: float) -> list[runs_crud.QueuedRun]:
        return [runs_crud.QueuedRun(i, r.spec.kind, r.task_id) for i, r in self.runs.items() if r.status == "queued"]

    def take_requeue(self, run_id: int, old_task_id: str | None) -> str | None:
        with self._lock:
            run = self.runs[run_id]
            if run.status != "queued" or run.task_id != old_task_id:
                return None
            run.task_id = uuid.uuid4().hex
            return run.task_id

    # ---- labels and trajectories for reward-model training (issue #15)
    def load_label_records(self, run_ids: Sequence[int]) -> list[JSON]:
        return [r for r in self.label_records if r.get("run_id") in set(run_ids)]

    def load_trajectory_data(self, run_ids: Sequence[int], limit: int) -> list[tuple[int, JSON]]:
        """Ids are `run_id * 1_000_000 + position` (memory runs have no trajectory ids)."""
        out = [
            (run_id * 1_000_000 + i, data)
            for run_id in run_ids
            for i, (_, data) in enumerate(self.runs[run_id].trajectories)
        ]
        return out[-limit:]
