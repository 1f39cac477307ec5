"""Comparison routes: launch checkpoints and baselines over the same examples, list them, reopen one."""

from __future__ import annotations

from fastapi import APIRouter, status

from backend.api.deps import EnqueueDep, LimitQuery, OffsetQuery, SessionDep
from backend.api.routes._jobs import enqueue_committed
from backend.crud import comparisons as crud
from backend.models.comparison import Comparison
from backend.queue import TaskName
from backend.schemas.comparison import ComparisonCreate, ComparisonPublic, ComparisonSummary
from worker.rl.evaluation.paper import agent_r1_table  # stdlib-only data reader (import-linter: a leaf)

router = APIRouter(prefix="/comparisons", tags=["comparisons"])


def _public(session: SessionDep, comparison: Comparison) -> ComparisonPublic:
    table = agent_r1_table()
    return ComparisonPublic(
        id=comparison.id,
        name=comparison.name,
        created_at=comparison.created_at,
        spec=comparison.spec,
        reference=table.exact_match,
        reference_source=table.source,
        **crud.comparison_view(session, comparison=comparison),
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_comparison(session: SessionDep, enqueue: EnqueueDep, comparison_in: ComparisonCreate) -> ComparisonPublic:
    """One eval run per checkpoint plus one for the baselines, same examples and scaffold; commit, then enqueue."""
    comparison, runs = crud.create_comparison(session, comparison_in=comparison_in)
    session.commit()
    for run in runs:
        enqueue_committed(session, enqueue, TaskName.EVALUATE, run)
    return _public(session, comparison)


@router.get("")
def list_comparisons(session: SessionDep, offset: OffsetQuery = 0, limit: LimitQuery = 50) -> list[ComparisonSummary]:
    """Newest first, each with its member labels and overall status."""
    comparisons, _ = crud.list_comparisons(session, offset=offset, limit=limit)
    runs = crud.member_runs(session, comparisons)
    return [
        ComparisonSummary(
            id=c.id,
            name=c.name,
            created_at=c.created_at,
            labels=[m["label"] for m in c.members],
            status=crud.overall_status(c, runs),
        )
        for c in comparisons
    ]


@router.get("/{comparison_id}")
def get_comparison(session: SessionDep, comparison_id: int) -> ComparisonPublic:
    return _public(session, crud.get_comparison(session, comparison_id=comparison_id))
