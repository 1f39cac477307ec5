"""Evaluation routes: launch an eval run (`POST /evaluations`); a run's latest tables beside the paper's numbers."""

from __future__ import annotations

from fastapi import APIRouter, status

from backend.api.deps import EnqueueDep, SessionDep
from backend.api.routes._jobs import enqueue_committed
from backend.crud import runs as runs_crud
from backend.queue import TaskName
from backend.schemas.evaluation import EvaluationCreate
from backend.schemas.run import EvaluationPublic, RunPublic

router = APIRouter(tags=["evaluations"])

PAPER_REFERENCE: dict[str, dict[str, float]] = {
    "Base Tool Call": {"hotpotqa": 0.1372, "2wiki": 0.0891, "musique": 0.0277},
    "Naive RAG": {"hotpotqa": 0.1916, "2wiki": 0.1792, "musique": 0.0277},
    "GRPO": {"hotpotqa": 0.4405, "2wiki": 0.5741, "musique": 0.1485},
    "PPO": {"hotpotqa": 0.4136, "2wiki": 0.5468, "musique": 0.1552},
    "RLOO": {"hotpotqa": 0.4089, "2wiki": 0.5641, "musique": 0.1419},
    "REINFORCE++": {"hotpotqa": 0.3768, "2wiki": 0.4796, "musique": 0.1336},
    "REINFORCE++-baseline": {"hotpotqa": 0.3966, "2wiki": 0.5406, "musique": 0.1485},
}
"""Exact match by method and dataset (HotpotQA / 2WikiMultihopQA / MuSiQue)."""

PAPER_SOURCE = "Agent-R1, Table 3: exact match, Qwen2.5-3B-Instruct"


@router.post("/evaluations", status_code=status.HTTP_201_CREATED)
def create_evaluation(session: SessionDep, enqueue: EnqueueDep, eval_in: EvaluationCreate) -> RunPublic:
    """Launch an eval run from a typed request (stored as the run's `eval_spec`), commit, then enqueue it."""
    run = runs_crud.create_eval_run(session, eval_in=eval_in)
    session.commit()
    return RunPublic.model_validate(enqueue_committed(session, enqueue, TaskName.EVALUATE, run))


@router.get("/runs/{run_id}/evaluation")
def get_run_evaluation(session: SessionDep, run_id: int) -> EvaluationPublic:
    evaluation = runs_crud.latest_evaluation(session, run_id=run_id)
    return EvaluationPublic(
        run_id=run_id,
        results=evaluation.results if evaluation else None,
        created_at=evaluation.created_at if evaluation else None,
        reference=PAPER_REFERENCE,
        reference_source=PAPER_SOURCE,
    )
