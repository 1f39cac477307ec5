"""QA loaders on the real benchmark samples (../shared/data) and on malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.rl.data.qa_formats import DatasetError, canonical_dataset_name, detect_format, load_qa_tasks
from worker.rl.data.splits import sample_subset, split_tasks
from worker.rl.types import Task

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark samples not found at {DATA}")


@needs_data
@pytest.mark.parametrize(
    ("rel", "count", "dataset", "first_id", "first_answer", "n_context"),
    [
        ("hotpotqa/dev_sample.json", 53, "hotpotqa", "5a8b57f25542995d1e6f1371", "yes", 10),
        (
            "hotpotqa/dev_sample_hf_datasets_format.jsonl",
            500,
            "hotpotqa",
            "5a7d5c175542991319bc93b1",
            "Denise Levertov",
            10,
        ),
        ("hotpotqa/dev_sample_migres_with_extra_field.jsonl", 200, "hotpotqa", "5a7f6fd75542992e7d278cfa", "Rush", 10),
        (
            "2wiki/dev_sample.json",
            64,
            "2wiki",
            "02ae4663095611ebbdaeac1f6bf848b6",
            "Samson And His Mighty Challenge",
            10,
        ),
        ("musique/dev_sample.jsonl", 200, "musique", "2hop__574419_270105", "Stanley", 20),
        ("hotpotqa/dev_sample_verl_style_qa_only.jsonl", 500, "hotpotqa", "hotpotqa-0", "yes", 0),
        ("musique/dev_sample_verl_style_qa_only.jsonl", 500, "musique", "musique-0", "Miquette Giraudy", 0),
    ],
)
def test_real_samples(rel: str, count: int, dataset: str, first_id: str, first_answer: str, n_context: int) -> None:
    tasks = load_qa_tasks(str(DATA / rel))
    assert len(tasks) == count
    first = tasks[0]
    assert (first.id, first.answers[0], len(first.context)) == (first_id, first_answer, n_context)
    assert first.metadata["dataset"] == dataset
    assert len({t.id for t in tasks}) == count
    if n_context:
        titles = {p.title for p in first.context}
        assert first.supporting_titles
        assert set(first.supporting_titles) <= titles


@needs_data
def test_hotpotqa_fields_and_metadata() -> None:
    task = load_qa_tasks(str(DATA / "hotpotqa/dev_sample.json"))[0]
    assert task.question == "Were Scott Derrickson and Ed Wood of the same nationality?"
    assert task.supporting_titles == ("Scott Derrickson", "Ed Wood")
    assert task.metadata["type"] == "comparison"
    assert task.metadata["level"] == "hard"
    wood = next(p for p in task.context if p.title == "Ed Wood (film)")
    assert wood.text.startswith("Ed Wood is a 1994 American biographical")
    assert "  " not in wood.text[:200]  # sentences joined with their own leading spaces


@needs_data
def test_musique_metadata_and_aliases() -> None:
    tasks = load_qa_tasks(str(DATA / "musique/dev_sample.jsonl"))
    first = tasks[0]
    assert first.metadata["type"] == "2hop"
    assert first.metadata["num_hops"] == 2
    assert len(first.supporting_titles) == 2
    raw = [json.loads(line) for line in (DATA / "musique/dev_sample.jsonl").read_text().splitlines()]
    with_alias = next(r for r in raw if r["answer_aliases"])
    task = next(t for t in tasks if t.id == with_alias["id"])
    assert task.answers[0] == with_alias["answer"]
    assert set(with_alias["answer_aliases"]) <= set(task.answers)


@needs_data
def test_hf_and_original_layouts_agree() -> None:
    orig = {t.id: t for t in load_qa_tasks(str(DATA / "hotpotqa/dev_sample.json"))}
    hf = [t for t in load_qa_tasks(str(DATA / "hotpotqa/dev_sample_hf_datasets_format.jsonl")) if t.id in orig]
    assert len(hf) == 3  # per SOURCES.md, three records overlap
    for task in hf:
        assert task.context == orig[task.id].context
        assert task.supporting_titles == orig[task.id].supporting_titles


@needs_data
def test_limit_is_a_seeded_subset() -> None:
    path = str(DATA / "2wiki/dev_sample.json")
    a = load_qa_tasks(path, limit=10, seed=3)
    b = load_qa_tasks(path, limit=10, seed=3)
    c = load_qa_tasks(path, limit=10, seed=4)
    assert [t.id for t in a] == [t.id for t in b]
    assert [t.id for t in a] != [t.id for t in c]
    assert len(a) == 10


def test_unanswerable_excluded_by_default(tmp_path: Path) -> None:
    rec = {
        "id": "2hop__1_2",
        "question": "Q?",
        "answer": "A",
        "answer_aliases": [],
        "answerable": True,
        "paragraphs": [{"idx": 0, "title": "T", "paragraph_text": "A text.", "is_supporting": True}],
    }
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "id": "2hop__3_4", "answerable": False}) + "\n")
    assert [t.id for t in load_qa_tasks(str(path))] == ["2hop__1_2"]
    assert len(load_qa_tasks(str(path), include_unanswerable=True)) == 2


def test_flat_jsonl_golden_answers_and_format_override(tmp_path: Path) -> None:
    path = tmp_path / "flat.jsonl"
    path.write_text(json.dumps({"id": "q1", "question": "Capital of France?", "golden_answers": ["Paris", "paris"]}))
    (task,) = load_qa_tasks(str(path), dataset="2WikiMultihopQA")
    assert task.answers == ("Paris", "paris")
    assert task.metadata["dataset"] == "2wiki"
    with pytest.raises(DatasetError, match="missing field 'paragraphs'"):
        load_qa_tasks(str(path), format="musique")
    with pytest.raises(DatasetError, match="unknown format"):
        load_qa_tasks(str(path), format="csv")


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        (
            "trunc.json",
            '[{"_id": "a", "question": "q", "answer": "x", "context": [], "supp',
            r"trunc\.json: invalid JSON at line 1",
        ),
        (
            "bad.jsonl",
            '{"question": "q", "answer": "x"}\n{"question": "q2", "answ',
            r"bad\.jsonl: line 2: invalid JSON",
        ),
        (
            "noanswer.json",
            json.dumps(
                [
                    {"_id": "a", "question": "q", "answer": "x", "context": [], "supporting_facts": []},
                    {"_id": "b", "question": "q", "context": [], "supporting_facts": []},
                ]
            ),
            r"noanswer\.json: record 1: missing field 'answer'",
        ),
        (
            "types.jsonl",
            json.dumps({"question": "q", "answer": "x"}) + "\n" + json.dumps({"question": 7, "answer": "x"}),
            r"types\.jsonl: line 2: field 'question' should be str, got int",
        ),
        (
            "ctx.json",
            json.dumps([{"_id": "a", "question": "q", "answer": "x", "context": "oops", "supporting_facts": []}]),
            r"ctx\.json: record 0: field 'context'",
        ),
        ("odd.jsonl", json.dumps({"foo": 1}), r"odd\.jsonl: line 1: unrecognised record keys"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, content: str, pattern: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match=pattern):
        load_qa_tasks(str(path))


def test_missing_source_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match="no such file"):
        load_qa_tasks(str(tmp_path / "nope.json"))
    with pytest.raises(DatasetError, match=r"offline.*hotpot_dev_distractor_v1\.json.*local path"):
        load_qa_tasks("hotpotqa")


def test_aliases_and_detection() -> None:
    assert canonical_dataset_name("HotpotQA") == "hotpotqa"
    assert canonical_dataset_name("2WikiMultihopQA") == "2wiki"
    assert canonical_dataset_name("bdsaglam/musique") == "musique"
    assert detect_format({"context": {"title": []}, "supporting_facts": {}}) == "hotpotqa_hf"
    assert detect_format({"context": [], "supporting_facts": [], "evidences": []}) == "2wiki"
    assert detect_format({"prompt": [], "reward_model": {}}) == "verl"


def _task(i: int, question: str | None = None) -> Task:
    return Task(id=f"t{i}", question=question or f"Question number {i}?", answers=("a",))


def test_split_tasks_disjoint_and_deterministic() -> None:
    tasks = [_task(i) for i in range(50)] + [_task(50, "question NUMBER 3")] + [_task(3, "other")]
    train, held = split_tasks(tasks, eval_size=0.2, seed=1)
    assert len(train) + len(held) == len(tasks)
    assert not {t.id for t in train} & {t.id for t in held}
    norm = lambda q: " ".join(q.lower().replace("?", " ").split())  # noqa: E731
    assert not {norm(t.question) for t in train} & {norm(t.question) for t in held}
    assert len(held) >= 10
    again = split_tasks(tasks, eval_size=0.2, seed=1)
    assert [t.id for t in again[1]] == [t.id for t in held]
    assert [t.id for t in split_tasks(tasks, eval_size=0.2, seed=2)[1]] != [t.id for t in held]
    assert len(split_tasks(tasks, eval_size=5, seed=0)[1]) >= 5


def test_split_and_subset_validation() -> None:
    tasks = [_task(i) for i in range(10)]
    with pytest.raises(ValueError, match="eval_size"):
        split_tasks(tasks, eval_size=1.5, seed=0)
    with pytest.raises(ValueError, match="eval_size"):
        split_tasks(tasks, eval_size=11, seed=0)
    assert [t.id for t in sample_subset(tasks, 3, seed=0)] == [t.id for t in sample_subset(tasks, 3, seed=0)]
    assert len(sample_subset(tasks, 30, seed=0)) == 10
