"""The embedded demo knowledge base: determinism, split disjointness, retrievability, scripted solutions."""

from __future__ import annotations

import json

import pytest

from worker.rl.data.demo_kb import DemoDataset, build_demo_dataset, demo_solution
from worker.rl.rewards.qa_metrics import normalize_answer
from worker.rl.tools.search import BM25Retriever
from worker.rl.training.build import load_task_data
from worker.rl.training.config import TaskConfig


@pytest.fixture(scope="module")
def demo() -> DemoDataset:
    return build_demo_dataset(seed=0)


def test_deterministic_per_seed(demo: DemoDataset) -> None:
    again = build_demo_dataset(seed=0)
    assert again.passages == demo.passages
    assert [t.to_dict() for t in again.train] == [t.to_dict() for t in demo.train]
    assert [t.to_dict() for t in again.heldout] == [t.to_dict() for t in demo.heldout]
    other = build_demo_dataset(seed=1)
    assert other.passages != demo.passages


def test_sizes_and_two_hop_fraction(demo: DemoDataset) -> None:
    assert len(demo.passages) == 200
    assert len(demo.heldout) == 100
    tasks = demo.train + demo.heldout
    two_hop = sum(t.metadata["type"] == "two_hop" for t in tasks)
    assert 0.2 <= two_hop / len(tasks) <= 0.35
    assert len({p.title for p in demo.passages}) == len(demo.passages)


def test_splits_share_no_question_and_no_subject(demo: DemoDataset) -> None:
    train_q = {normalize_answer(t.question) for t in demo.train}
    held_q = {normalize_answer(t.question) for t in demo.heldout}
    assert not train_q & held_q
    assert not {t.metadata["subject"] for t in demo.train} & {t.metadata["subject"] for t in demo.heldout}
    assert len({t.id for t in demo.train + demo.heldout}) == len(demo.train) + len(demo.heldout)


def test_answers_stated_verbatim_in_supporting_paragraphs(demo: DemoDataset) -> None:
    text_by_title = {p.title: p.text for p in demo.passages}
    for task in demo.train + demo.heldout:
        last_hop = task.supporting_titles[-1]
        assert task.answers[0] in text_by_title[last_hop], task
        for title in task.supporting_titles:
            assert 1 <= text_by_title[title].count(".") <= 3


def test_bm25_finds_one_hop_paragraph_at_rank_one(demo: DemoDataset) -> None:
    retriever = BM25Retriever.from_passages(demo.passages)
    one_hop = [t for t in demo.train + demo.heldout if t.metadata["type"] == "one_hop"]
    results = retriever.search_batch([t.question for t in one_hop], top_k=1)
    hits = sum(bool(r) and r[0].title == t.supporting_titles[0] for r, t in zip(results, one_hop, strict=True))
    assert hits / len(one_hop) >= 0.9


def test_demo_solution_two_hop(demo: DemoDataset) -> None:
    task = next(t for t in demo.heldout if t.metadata["type"] == "two_hop")
    turns = demo_solution(task, demo)
    assert len(turns) == 3
    calls = [json.loads(t.removeprefix("<tool_call>").removesuffix("</tool_call>")) for t in turns[:2]]
    assert [c["arguments"]["query"] for c in calls] == list(task.supporting_titles)
    assert all(c["name"] == "search" for c in calls)
    assert turns[2] == f"<answer>{task.answers[0]}</answer>"
    one = next(t for t in demo.train if t.metadata["type"] == "one_hop")
    assert len(demo_solution(one, demo)) == 2


def test_demo_solution_rejects_foreign_tasks(demo: DemoDataset) -> None:
    other = build_demo_dataset(seed=5)
    with pytest.raises(ValueError, match="absent from this dataset"):
        demo_solution(other.train[0], demo)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_entities": 5}, "num_entities"),
        ({"two_hop_fraction": 1.0}, "two_hop_fraction"),
        ({"heldout_size": 10_000}, "heldout_size"),
    ],
)
def test_build_validation(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build_demo_dataset(**kwargs)  # type: ignore[arg-type]


def test_max_hops_keeps_only_one_hop_questions_in_train_and_eval() -> None:
    data = load_task_data(TaskConfig(max_hops=1, eval_size=60))
    assert len(data.eval) == 60
    assert {t.metadata["num_hops"] for t in [*data.train, *data.eval]} == {1}
    everything = load_task_data(TaskConfig(eval_size=60))
    assert {t.metadata["num_hops"] for t in everything.train} == {1, 2}
    assert not {t.id for t in data.train} & {t.id for t in data.eval}


def test_max_hops_is_refused_outside_the_demo_task() -> None:
    with pytest.raises(ValueError, match="max_hops filters the built-in demo task only"):
        TaskConfig(source="data/hotpot.json", max_hops=1)
    with pytest.raises(ValueError, match=r"task\.max_hops must be 1, 2 or omitted"):
        TaskConfig(max_hops=3)


def test_demo_eval_subset_spans_the_relation_types() -> None:
    """The held-out list is sorted by id (grouped by relation): a first-N cut would miss whole relations."""
    full = load_task_data(TaskConfig(max_hops=1, eval_size=1000)).eval
    subset = load_task_data(TaskConfig(max_hops=1, eval_size=30)).eval
    assert len(subset) == 30
    assert subset != full[:30]
    relations = {t.metadata["relation"] for t in full}
    assert len({t.metadata["relation"] for t in subset}) >= len(relations) - 1  # a 3-question relation may be missed
    assert len({t.metadata["relation"] for t in full[:30]}) <= len(relations) - 3, "the cut this test guards against"
    assert subset == load_task_data(TaskConfig(max_hops=1, eval_size=30)).eval, "seeded"
