"""Test doubles for the app: `FakeStudioClient` (in-memory API with the client's method names) and sample records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.client import StudioAPIError
from backend.schemas.comparison import ComparisonCreate, ComparisonPublic, ComparisonSummary
from backend.schemas.evaluation import EvaluationCreate
from backend.schemas.health import BrokerHealth, DatabaseHealth, HealthPublic, WorkersHealth
from backend.schemas.reward_model import RewardModelCreate, RewardModelPublic
from backend.schemas.run import (
    CheckpointPublic,
    EvaluationPublic,
    MetricPoint,
    MetricsPage,
    RunCreate,
    RunPublic,
    RunsPage,
)
from backend.schemas.tool import ToolCreate, ToolPublic, ToolUpdate, ToolVersionPublic
from backend.schemas.trajectory import (
    KappaPublic,
    LabelCreate,
    LabelPair,
    LabelPublic,
    LabelStats,
    TrajectoriesPage,
    TrajectoryPublic,
    TrajectorySummary,
)

NOW = datetime(2025, 1, 1, 12, 0, 0)


def make_run(run_id: int, **overrides: Any) -> RunPublic:
    base: dict[str, Any] = {
        "id": run_id,
        "name": f"run-{run_id}",
        "kind": "train",
        "status": "running",
        "preset": "quickstart",
        "requested_config": {},
        "resolved_config": None,
        "eval_spec": None,
        "auto_resumes": 0,
        "environment_id": None,
        "progress": 0.5,
        "current_step": 1,
        "total_steps": 2,
        "eta_s": 30.0,
        "error": None,
        "resumable": True,
        "cancel_requested": False,
        "worker_hostname": "w1",
        "celery_task_id": None,
        "enqueued_at": None,
        "heartbeat_at": None,
        "result": None,
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": None,
    }
    base.update(overrides)
    return RunPublic(**base)


def trajectory_data(reward: float = 1.0, *, parse_error: str | None = None) -> dict[str, Any]:
    """A 3-message trajectory: prompt (mask 0), a tool call (mask 1), a tool answer (mask 0), an answer (mask 1)."""
    call = {"name": "search", "arguments": {"query": "capital of France"}, "id": ""}
    turns = [
        {"role": "user", "text": "What is the capital of France?", "token_start": 0, "token_end": 3},
        {
            "role": "assistant",
            "text": '<tool_call>{"name": "search"}</tool_call>',
            "token_start": 3,
            "token_end": 5,
            "tool_calls": [call],
            "step_reward": 0.1,
            "parse_error": parse_error,
        },
        {
            "role": "tool",
            "name": "search",
            "text": "Doc 1 (Title: Paris) Paris is the capital.",
            "token_start": 5,
            "token_end": 7,
            "tool_error": False,
        },
        {"role": "assistant", "text": "<answer>Paris</answer>", "token_start": 7, "token_end": 9, "step_reward": 0.9},
    ]
    mask = [0, 0, 0, 1, 1, 0, 0, 1, 1]
    logprobs = [None, None, None, -0.1, -3.2, None, None, -0.5, -0.01]
    return {
        "task_id": "t1",
        "group_id": "g1",
        "token_ids": list(range(100, 109)),
        "loss_mask": mask,
        "logprobs": logprobs,
        "prompt_length": 3,
        "turns": turns,
        "reward": reward,
        "reward_breakdown": {"exact_match": reward, "format": 1.0},
        "step_rewards": [0.1, 0.9],
        "terminated": True,
        "truncated": False,
        "finish_reason": "answer",
        "final_answer": "Paris",
        "metrics": {},
    }


def make_trajectory(
    traj_id: int, *, reward: float = 1.0, siblings: list[int] | None = None, **kw: Any
) -> TrajectoryPublic:
    base: dict[str, Any] = {
        "id": traj_id,
        "run_id": 1,
        "step": 1,
        "group_id": "g1",
        "task_id": "t1",
        "reward": reward,
        "has_parse_error": False,
        "has_tool_error": False,
        "truncated": False,
        "finish_reason": "answer",
        "num_turns": 2,
        "num_tool_calls": 1,
        "created_at": NOW,
        "data": trajectory_data(reward),
        "sibling_ids": siblings or [],
        "labels": [],
    }
    base.update(kw)
    return TrajectoryPublic(**base)


REPORT = {
    "model": "smollm2-135m",
    "paper_model": "Qwen2.5-3B-Instruct",
    "paper": "Agent-R1 Table 3",
    "methods": [
        {
            "method": "naive-rag",
            "paper_row": "Naive RAG",
            "seed": 0,
            "wall_s": 3.0,
            "datasets": [
                {
                    "dataset": "hotpotqa",
                    "n": 10,
                    "em": 0.1,
                    "cover_em": 0.2,
                    "f1": 0.25,
                    "paper_em": 0.1916,
                    "avg_turns": 1.0,
                    "avg_tool_calls": 0.0,
                    "retrieval_recall": 0.5,
                }
            ],
            "average": {"em": 0.1, "cover_em": 0.2, "f1": 0.25, "paper_em": 0.1916},
        }
    ],
}
REFERENCE = {"Naive RAG": {"hotpotqa": 0.1916, "2wiki": 0.1792, "musique": 0.0277}}


class FakeStudioClient:
    """The `StudioClient` surface over dicts; `fail` makes every call raise like an unreachable API."""

    def __init__(self) -> None:
        self.tools: dict[int, ToolPublic] = {}
        self.runs: dict[int, RunPublic] = {}
        self.metrics: dict[int, list[MetricPoint]] = {}
        self.trajectories: dict[int, TrajectoryPublic] = {}
        self.labels: list[tuple[int, LabelCreate]] = []
        self.evaluations: dict[int, dict[str, Any]] = {}
        self.checkpoints: dict[int, list[CheckpointPublic]] = {}
        self.reward_models: list[RewardModelPublic] = []
        self.comparisons: dict[int, ComparisonPublic] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail: str | None = None

    def _call(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if self.fail:
            raise StudioAPIError(self.fail, status_code=503)

    def health(self) -> HealthPublic:
        self._call("health")
        return HealthPublic(
            ok=True,
            db=DatabaseHealth(ok=True, dialect="sqlite", revision="r1", head="r1"),
            broker=BrokerHealth(ok=True, url="redis://x"),
            workers=WorkersHealth(ok=True, hostnames=["w1"]),
            versions={},
        )

    def list_tools(self) -> list[ToolPublic]:
        self._call("list_tools")
        return list(self.tools.values())

    def get_tool(self, tool_id: int) -> ToolPublic:
        self._call("get_tool", tool_id)
        if tool_id not in self.tools:
            raise StudioAPIError(f"tool {tool_id} not found (HTTP 404)", status_code=404)
        return self.tools[tool_id]

    def create_tool(self, tool: ToolCreate) -> ToolPublic:
        self._call("create_tool", tool)
        if "Args:" not in tool.source:
            raise StudioAPIError("source: the function's docstring has no Args section (HTTP 422)", status_code=422)
        new = ToolPublic(
            id=len(self.tools) + 1,
            name=tool.name,
            description=tool.description,
            kind=tool.kind,
            source=tool.source,
            params={},
            tool_schema={"name": tool.name, "parameters": {}},
            version=1,
            created_at=NOW,
            updated_at=NOW,
        )
        self.tools[new.id] = new
        return new

    def update_tool(self, tool_id: int, update: ToolUpdate) -> ToolPublic:
        self._call("update_tool", update)
        old = self.tools[tool_id]
        changed = {k: v for k, v in update.model_dump(exclude_unset=True).items() if v is not None}
        self.tools[tool_id] = old.model_copy(update={**changed, "version": old.version + 1})
        return self.tools[tool_id]

    def list_tool_versions(self, tool_id: int) -> list[ToolVersionPublic]:
        self._call("list_tool_versions", tool_id)
        t = self.tools[tool_id]
        return [
            ToolVersionPublic(
                tool_id=t.id, version=v, source=t.source, params={}, tool_schema=t.tool_schema, created_at=NOW
            )
            for v in range(1, t.version + 1)
        ]

    def test_tool(self, tool_id: int, arguments: dict[str, Any]) -> RunPublic:
        self._call("test_tool", arguments)
        run = make_run(len(self.runs) + 100, kind="tool_test", status="queued", config={"arguments": arguments})
        self.runs[run.id] = run
        return run

    def list_environments(self) -> list[Any]:
        self._call("list_environments")
        return []

    def create_run(self, run: RunCreate) -> RunPublic:
        self._call("create_run", run)
        new = make_run(
            len(self.runs) + 1,
            name=run.name or "run",
            kind=run.kind,
            status="queued",
            preset=run.preset,
            requested_config=run.config,
        )
        self.runs[new.id] = new
        return new

    def create_evaluation(self, evaluation: EvaluationCreate) -> RunPublic:
        self._call("create_evaluation", evaluation)
        spec = evaluation.spec().model_dump(mode="json")
        new = make_run(
            len(self.runs) + 1,
            name=evaluation.name or "eval",
            kind="eval",
            status="queued",
            preset=None,
            eval_spec=spec,
        )
        self.runs[new.id] = new
        return new

    def list_runs(
        self, *, status: str | None = None, kind: str | None = None, offset: int = 0, limit: int = 50
    ) -> RunsPage:
        self._call("list_runs", {"status": status, "kind": kind})
        items = [r for r in reversed(self.runs.values()) if (status in (None, r.status)) and (kind in (None, r.kind))]
        return RunsPage(items=items[offset : offset + limit], total=len(items))

    def get_run(self, run_id: int) -> RunPublic:
        self._call("get_run", run_id)
        if run_id not in self.runs:
            raise StudioAPIError(f"run {run_id} not found (HTTP 404)", status_code=404)
        return self.runs[run_id]

    def cancel_run(self, run_id: int) -> RunPublic:
        self._call("cancel_run", run_id)
        self.runs[run_id] = self.runs[run_id].model_copy(update={"status": "cancelling", "cancel_requested": True})
        return self.runs[run_id]

    def resume_run(self, run_id: int) -> RunPublic:
        self._call("resume_run", run_id)
        if self.runs[run_id].status == "running":
            raise StudioAPIError(f"run {run_id} is running; resume is refused (HTTP 409)", status_code=409)
        return self.runs[run_id]

    def get_metrics(self, run_id: int, *, since: int | None = None) -> MetricsPage:
        self._call("get_metrics", since)
        points = [p for p in self.metrics.get(run_id, []) if since is None or p.step > since]
        return MetricsPage(run_id=run_id, points=points, last_step=points[-1].step if points else since)

    def list_checkpoints(self, run_id: int) -> list[CheckpointPublic]:
        self._call("list_checkpoints", run_id)
        return self.checkpoints.get(run_id, [])

    def get_evaluation(self, run_id: int) -> EvaluationPublic:
        self._call("get_evaluation", run_id)
        return EvaluationPublic(
            run_id=run_id,
            results=self.evaluations.get(run_id),
            created_at=None,
            reference=REFERENCE,
            reference_source="Agent-R1 Table 3",
        )

    def create_comparison(self, comparison: ComparisonCreate) -> ComparisonPublic:
        self._call("create_comparison", comparison)
        labels = [f"run #{c.run_id} step {c.step}" for c in comparison.checkpoints] + list(comparison.baselines)
        new = ComparisonPublic(
            id=len(self.comparisons) + 1,
            name=" vs ".join(labels),
            created_at=NOW,
            labels=labels,
            status="queued",
            spec=comparison.shared_spec(),
            members=[],
            rows=[],
            datasets=[],
            table=[],
            examples=[],
            reference=REFERENCE,
            reference_source="Agent-R1 Table 3",
        )
        self.comparisons[new.id] = new
        return new

    def list_comparisons(self, *, limit: int = 20) -> list[ComparisonSummary]:
        self._call("list_comparisons", limit)
        return [ComparisonSummary.model_validate(c.model_dump()) for c in self.comparisons.values()][:limit]

    def get_comparison(self, comparison_id: int) -> ComparisonPublic:
        self._call("get_comparison", comparison_id)
        if comparison_id not in self.comparisons:
            raise StudioAPIError(f"comparison {comparison_id} not found", status_code=404)
        return self.comparisons[comparison_id]

    def list_trajectories(self, **filters: Any) -> TrajectoriesPage:
        self._call("list_trajectories", filters)
        items = [
            t
            for t in self.trajectories.values()
            if filters.get("step") in (None, t.step) and filters.get("run_id") in (None, t.run_id)
        ]
        return TrajectoriesPage(items=items, total=len(items))

    def get_trajectory(self, trajectory_id: int) -> TrajectoryPublic:
        self._call("get_trajectory", trajectory_id)
        if trajectory_id not in self.trajectories:
            raise StudioAPIError(f"trajectory {trajectory_id} not found (HTTP 404)", status_code=404)
        return self.trajectories[trajectory_id]

    def create_label(self, trajectory_id: int, label: LabelCreate) -> LabelPublic:
        self._call("create_label", trajectory_id)
        self.labels.append((trajectory_id, label))
        return LabelPublic(id=len(self.labels), trajectory_id=trajectory_id, created_at=NOW, **label.model_dump())

    def label_queue(self, run_id: int, *, limit: int = 20) -> list[Any]:
        self._call("label_queue", run_id)
        labeled = {tid for tid, _ in self.labels}
        return [t for t in self.trajectories.values() if t.run_id == run_id and t.id not in labeled][:limit]

    # ---- pairwise labels and reward models (issue #15)
    def pair_queue(self, run_id: int, *, limit: int = 20) -> list[LabelPair]:
        self._call("pair_queue", run_id)
        done = {frozenset((tid, label.other_trajectory_id)) for tid, label in self.labels if label.kind == "pairwise"}
        members = sorted((t for t in self.trajectories.values() if t.run_id == run_id), key=lambda t: t.id)
        pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1 :] if frozenset((a.id, b.id)) not in done]
        summary = TrajectorySummary.model_validate
        return [
            LabelPair(a=summary(a.model_dump()), b=summary(b.model_dump()), reason="mixed rewards") for a, b in pairs
        ][:limit]

    def label_stats(self, run_id: int) -> LabelStats:
        self._call("label_stats", run_id)
        kinds: dict[str, int] = {}
        for _, label in self.labels:
            kinds[label.kind] = kinds.get(label.kind, 0) + 1
        return LabelStats(
            run_id=run_id,
            trajectories=len(self.trajectories),
            labeled_trajectories=len({t for t, _ in self.labels}),
            labels_by_kind=kinds,
            labels_by_labeler={"ann": len(self.labels)} if self.labels else {},
            pairwise_kappa=KappaPublic(kappa=0.5, items=2, agreement=0.75),
            step_kappa=KappaPublic(kappa=None, items=0, agreement=None),
        )

    def create_reward_model(self, rm_in: RewardModelCreate) -> RewardModelPublic:
        self._call("create_reward_model", rm_in)
        rm = RewardModelPublic(
            id=100 + len(self.reward_models),
            name=rm_in.name or "rm",
            status="queued",
            error=None,
            base_model=rm_in.base_model,
            kind=rm_in.kind,
            label_run_ids=rm_in.label_run_ids,
            created_at=NOW,
            finished_at=None,
        )
        self.reward_models.append(rm)
        return rm

    def list_reward_models(self) -> list[RewardModelPublic]:
        self._call("list_reward_models")
        return list(reversed(self.reward_models))
