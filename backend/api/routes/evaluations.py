"""Evaluation routes: launch an eval run (`POST /evaluations`); a run's latest tables beside the paper's numbers."""

from __future__ import annotations

from fastapi import APIRouter, status

from backend.api.deps import EnqueueDep, SessionDep
from backend.api.routes._jobs import enqueue_committed
from backend.crud import runs as runs_crud
from backend.queue import TaskName
from backend.schemas.evaluation import EvaluationCreate
from backend.schemas.run import EvaluationPublic, RunPublic
from worker.rl.evaluation.paper import agent_r1_table  # stdlib-only data reader (import-linter: a leaf)

router = APIRouter(tags=["evaluations"])


@router.post("/evaluations", status_code=status.HTTP_201_CREATED)
def create_evaluation(session: SessionDep, enqueue: EnqueueDep, eval_in: EvaluationCreate) -> RunPublic:
    """Launch an eval run from a typed request (stored as the run's `eval_spec`), commit, then enqueue it."""
    run = runs_crud.create_eval_run(session, eval_in=eval_in)
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TaskName.EVALUATE, run))


@router.get("/runs/{run_id}/evaluation")
def get_run_evaluation(session: SessionDep, run_id: int) -> EvaluationPublic:
    evaluation = runs_crud.latest_evaluation(session, run_id=run_id)
    table = agent_r1_table()
    return EvaluationPublic(
        run_id=run_id,
        results=evaluation.results if evaluation else None,
        created_at=evaluation.created_at if evaluation else None,
        reference=table.exact_match,
        reference_source=table.source,
    )
