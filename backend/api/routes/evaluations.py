"""Evaluation route: the run's latest evaluation tables beside the Agent-R1 paper's numbers."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import SessionDep
from backend.crud import runs as runs_crud
from backend.schemas.run import EvaluationPublic
from worker.rl.evaluation.paper import agent_r1_table  # stdlib-only data reader (import-linter: a leaf)

router = APIRouter(tags=["evaluations"])


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
