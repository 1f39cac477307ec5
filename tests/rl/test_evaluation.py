"""Evaluation runner, table math and reports, driven by `ScriptedGenerator` (no torch, no model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.rl.conftest import SpyGenerator
from worker.rl.envs.base import EnvConfig
from worker.rl.envs.qa import QA_SYSTEM_PROMPT, QASearchEnv
from worker.rl.evaluation.job import EvalRequest
from worker.rl.evaluation.report import PAPER_EM, build_report, paper_row, render_markdown, write_report
from worker.rl.evaluation.results import EvalResult, Prediction, summarize
from worker.rl.evaluation.runner import BATCH_SIZE, evaluate, extract_prediction
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.chat import ChatFormat
from worker.rl.generation.scripted import ScriptedGenerator
from worker.rl.rewards.qa_metrics import QAScores
from worker.rl.rollout import RolloutLimits, collect_trajectories
from worker.rl.tools.search import BM25Retriever, Retriever, corpus_from_tasks
from worker.rl.types import Passage, Task

SPECIALS = ("<|im_start|>", "<|im_end|>")


class CharTokenizer:
    """One id per character, plus the two ChatML specials as single ids (eos = <|im_end|>)."""

    eos_token_id: int | None = 1

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = []
        i = 0
        while i < len(text):
            special = next((k for k, s in enumerate(SPECIALS) if text.startswith(s, i)), None)
            if special is not None:
                ids.append(special)
                i += len(SPECIALS[special])
            else:
                ids.append(ord(text[i]) + 10)
                i += 1
        return ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        parts = [("" if skip_special_tokens else SPECIALS[t]) if t < 2 else chr(t - 10) for t in token_ids]
        return "".join(parts)


def _task(i: int, answer: str, title: str, text: str) -> Task:
    return Task(
        id=f"q{i}",
        question=f"Where was {title} born?",
        answers=(answer,),
        context=(Passage(title, text), Passage(f"Other {i}", "Unrelated filler text.")),
        supporting_titles=(title,),
        metadata={"dataset": "toy"},
    )


TASKS = [
    _task(0, "Paris", "Ana Vell", "Ana Vell was born in Paris."),
    _task(1, "Rome", "Bo Trask", "Bo Trask was born in Rome."),
    _task(2, "Oslo", "Cy Dorn", "Cy Dorn was born in Oslo."),
]
LIMITS = RolloutLimits(max_turns=3, max_new_tokens_per_turn=200, max_total_tokens=8000)


def _factory(name: str, tasks: Sequence[Task]) -> Retriever:
    return BM25Retriever.from_passages(corpus_from_tasks(tasks))


def _reply_by_question(answers: dict[str, str]):  # type: ignore[no-untyped-def]
    def reply(prompt: str) -> str:
        for key, value in answers.items():
            if key in prompt.rsplit("Question:", 1)[-1]:
                return value
        return "no idea"

    return reply


def test_extract_prediction() -> None:
    assert extract_prediction("think...\n<answer> Paris </answer>") == "Paris"
    assert extract_prediction("<answer>a</answer> then <answer>b</answer>") == "b"
    assert extract_prediction("<answer>Rome, Italy") == "Rome, Italy"
    assert extract_prediction("I think.\nAnswer: Oslo\n\n") == "Oslo"
    assert extract_prediction('<tool_call>{"name": "search"}</tool_call>') == ""
    assert extract_prediction("") == ""


def test_direct_method_scores_and_table_math() -> None:
    # Prompts end with the prefilled "<answer>", so the scripted reply continues it.
    gen = ScriptedGenerator(
        CharTokenizer(),
        _reply_by_question(
            {"Ana Vell": "Paris</answer>", "Bo Trask": "Milan</answer>", "Cy Dorn": "in Oslo town</answer>"}
        ),
    )
    result = evaluate(
        {"toy": TASKS},
        method="direct",
        generator=gen,
        tokenizer=CharTokenizer(),
        retriever_factory=None,
        limits=LIMITS,
        seed=0,
    )
    (row,) = result.metrics
    assert [p.prediction for p in result.predictions] == ["Paris", "Milan", "in Oslo town"]
    assert row.n == 3
    assert row.em == pytest.approx(1 / 3)
    assert row.cover_em == pytest.approx(2 / 3)
    assert row.f1 == pytest.approx((1 + 0 + 0.5) / 3)  # "in oslo town" vs "oslo": P=1/3, R=1 -> 0.5
    assert (row.avg_turns, row.avg_tool_calls, row.retrieval_recall) == (1.0, 0.0, None)
    assert gen.calls == [3]  # one batched engine call


def test_naive_rag_puts_passages_in_prompt_and_measures_recall() -> None:
    seen: list[str] = []

    def reply(prompt: str) -> str:
        seen.append(prompt)
        return "Paris</answer>"

    gen = ScriptedGenerator(CharTokenizer(), reply)
    result = evaluate(
        {"toy": TASKS[:1]},
        method="naive-rag",
        generator=gen,
        tokenizer=CharTokenizer(),
        retriever_factory=_factory,
        limits=LIMITS,
        top_k=1,
    )
    assert "Doc 1 (Title: Ana Vell) Ana Vell was born in Paris." in seen[0]
    assert result.predictions[0].retrieval_recall == 1.0
    assert result.metrics[0].em == 1.0


def test_base_tool_call_runs_multi_turn_episodes() -> None:
    def reply(prompt: str) -> str:
        question = prompt.split("Question:")[-1]  # this episode, after the prompt's worked examples
        name = next(t.supporting_titles[0] for t in TASKS if t.supporting_titles[0] in question)
        if "<tool_response>" not in question:
            return f'<tool_call>{{"name": "search", "arguments": {{"query": "{name}"}}}}</tool_call>'
        answer = next(t.answers[0] for t in TASKS if t.supporting_titles[0] == name)
        return f"<answer>{answer if name != 'Cy Dorn' else 'Bergen'}</answer>"

    gen = ScriptedGenerator(CharTokenizer(), reply)
    result = evaluate(
        {"toy": TASKS},
        method="base-tool-call",
        generator=gen,
        tokenizer=CharTokenizer(),
        retriever_factory=_factory,
        limits=LIMITS,
        top_k=1,
        seed=3,
    )
    (row,) = result.metrics
    assert row.em == pytest.approx(2 / 3)
    assert row.avg_turns == 2.0
    assert row.avg_tool_calls == 1.0
    assert row.retrieval_recall == 1.0
    first = result.predictions[0]
    assert first.trajectory is not None
    assert first.trajectory["final_answer"] == "Paris"
    assert first.generated_tokens == sum(first.trajectory["loss_mask"])
    assert row.generated_tokens == sum(p.generated_tokens for p in result.predictions)


def test_tool_episodes_match_the_rollout_loop_they_replaced() -> None:
    """`base-tool-call` goes through `collect_heldout`: the engine sees the same calls (prompts, params, seeds)
    and the predictions carry the same trajectories as the chunked `collect_trajectories` loop it replaced."""
    names = [f"Person {chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(BATCH_SIZE + 8)]  # crosses a chunk
    tasks = [_task(i, f"City{i}", name, f"{name} was born in City{i}.") for i, name in enumerate(names)]

    def reply(prompt: str) -> str:
        name = next(n for n in names if f"Where was {n} born?" in prompt)
        if "<tool_response>" not in prompt.split("Question:")[-1]:  # this episode, after the worked examples
            return f'<tool_call>{{"name": "search", "arguments": {{"query": "{name}"}}}}</tool_call>'
        return f"<answer>City{names.index(name) if names.index(name) % 3 else 0}</answer>"

    new = SpyGenerator(CharTokenizer(), reply)
    result = evaluate(
        {"toy": tasks},
        method="base-tool-call",
        generator=new,
        tokenizer=CharTokenizer(),
        retriever_factory=_factory,
        limits=LIMITS,
        top_k=1,
        seed=5,
    )

    old = SpyGenerator(CharTokenizer(), reply)
    chat = ChatFormat(CharTokenizer())
    retriever = _factory("toy", tasks)
    env_config = EnvConfig(system_prompt=QA_SYSTEM_PROMPT, max_turns=LIMITS.max_turns)
    params = SamplingParams(
        max_new_tokens=LIMITS.max_new_tokens_per_turn, temperature=0.0, stop=chat.stop_strings, seed=5
    )
    reference = []
    for start in range(0, len(tasks), BATCH_SIZE):
        batch = collect_trajectories(
            lambda: QASearchEnv(retriever, top_k=1, max_passage_chars=400, config=env_config),
            old,
            chat,
            tasks[start : start + BATCH_SIZE],
            group_size=1,
            params=params,
            limits=LIMITS,
            seed=5 + start,
            group_prefix="eval-toy-",
        )
        reference.extend(batch.trajectories)

    assert (new.prompts, new.params) == (old.prompts, old.params)
    assert new.calls == [BATCH_SIZE, BATCH_SIZE, 8, 8]  # two turns per chunk
    assert [p.trajectory for p in result.predictions] == [t.to_dict() for t in reference]
    assert [p.prediction for p in result.predictions] == [t.final_answer for t in reference]
    assert result.metrics[0].em == pytest.approx(sum(1 for i in range(len(tasks)) if i % 3 or i == 0) / len(tasks))


def test_evaluate_validates_method_and_retriever() -> None:
    gen = ScriptedGenerator(CharTokenizer(), ["x"])
    with pytest.raises(ValueError, match="method must be one of"):
        evaluate(
            {"toy": TASKS},
            method="oracle",
            generator=gen,
            tokenizer=CharTokenizer(),  # type: ignore[arg-type]
            retriever_factory=None,
            limits=LIMITS,
        )
    with pytest.raises(ValueError, match="needs a retriever_factory"):
        evaluate(
            {"toy": TASKS},
            method="naive-rag",
            generator=gen,
            tokenizer=CharTokenizer(),
            retriever_factory=None,
            limits=LIMITS,
        )


def _pred(dataset: str, em: float, cover: float, f1: float, recall: float | None, turns: int = 1) -> Prediction:
    return Prediction(
        dataset=dataset,
        method="base-tool-call",
        task_id="t",
        question="q",
        golds=("a",),
        prediction="a",
        scores=QAScores(em, cover, f1),
        num_turns=turns,
        num_tool_calls=turns - 1,
        retrieval_recall=recall,
        generated_tokens=10,
    )


def test_summarize_and_report(tmp_path: Path) -> None:
    hot = summarize(
        "hotpotqa", "base-tool-call", [_pred("hotpotqa", 1, 1, 1, 0.5, 3), _pred("hotpotqa", 0, 1, 0.5, None)], 2.0
    )
    assert (hot.em, hot.cover_em, hot.f1, hot.avg_turns, hot.avg_tool_calls) == (0.5, 1.0, 0.75, 2.0, 1.0)
    assert hot.retrieval_recall == 0.5  # only the example with gold titles counts
    assert hot.examples_per_s == 1.0
    assert hot.tokens_per_s == 10.0
    wiki = summarize("2wiki", "base-tool-call", [_pred("2wiki", 0, 0, 0.25, 1.0)], 1.0)
    result = EvalResult("base-tool-call", 0, (hot, wiki), (), 3.0)
    assert result.average() == {"em": 0.25, "cover_em": 0.5, "f1": 0.5}
    report = build_report([result], model="tiny")
    method = report["methods"][0]
    assert method["paper_row"] == "Base Tool Call"
    assert method["datasets"][0]["paper_em"] == 0.1372
    assert method["average"]["paper_em"] == pytest.approx((0.1372 + 0.0891) / 2)
    md = render_markdown(report)
    assert "| base-tool-call | hotpotqa | 2 | 0.5000 | 1.0000 | 0.7500 | 0.1372 |" in md
    paths = write_report([result], tmp_path, model="tiny")
    assert json.loads(paths["json"].read_text())["methods"][0]["average"]["em"] == 0.25
    assert paths["predictions_base-tool-call"].read_text() == ""


def test_paper_rows() -> None:
    assert paper_row("naive-rag") == "Naive RAG"
    assert paper_row("direct") is None
    assert paper_row("agent") == "GRPO"
    assert paper_row("agent", "RLOO") == "RLOO"
    assert PAPER_EM["PPO"]["musique"] == 0.1552
    with pytest.raises(ValueError, match="agent_algorithm"):
        paper_row("agent", "DPO")


DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_cli_parsing(tmp_path: Path) -> None:
    import typer

    from worker.rl.evaluation.cli import parse_dataset_specs, parse_methods

    (tmp_path / "2wiki").mkdir()
    (tmp_path / "2wiki" / "dev_sample.json").write_text("[]")
    specs = parse_dataset_specs("2WikiMultihopQA, mine=/x/y.jsonl,musique", tmp_path)
    assert specs == {"2wiki": str(tmp_path / "2wiki" / "dev_sample.json"), "mine": "/x/y.jsonl", "musique": "musique"}
    assert parse_methods(["direct,naive-rag", "direct", "agent"]) == ["direct", "naive-rag", "agent"]
    with pytest.raises(typer.BadParameter, match="unknown method"):
        parse_methods(["oracle"])


def test_cli_retriever_flag_reaches_the_request_and_a_bad_value_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from worker.rl.evaluation import cli

    seen: list[tuple[EvalRequest, object]] = []

    def run_evaluation(request: EvalRequest, **kwargs: object) -> list[EvalResult]:
        seen.append((request, kwargs["index_cache_dir"]))
        return []

    monkeypatch.setattr(cli, "run_evaluation", run_evaluation)
    base = ["eval", "--datasets", "hotpotqa", "--method", "naive-rag", "--output-dir", str(tmp_path / "out")]
    out = CliRunner().invoke(cli.app, [*base, "--retriever", "dense", "--index-cache-dir", str(tmp_path / "idx")])
    assert out.exit_code == 0, out.output
    assert seen[-1] == (seen[-1][0], tmp_path / "idx")
    assert seen[-1][0].retriever == "dense"
    CliRunner().invoke(cli.app, base)
    assert seen[-1][0].retriever == "bm25"  # the default
    out = CliRunner().invoke(cli.app, [*base, "--retriever", "tfidf"])
    assert out.exit_code == 2
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert lines == ["error: retriever must be one of bm25, dense; got 'tfidf'"], out.output


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark samples not found at {DATA}")
def test_cli_eval_end_to_end_with_scripted_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from worker.rl.evaluation import cli, job

    def engine(model: str, engine: str, max_batch_size: int) -> tuple[ScriptedGenerator, CharTokenizer]:
        return ScriptedGenerator(CharTokenizer(), lambda prompt: "yes</answer>"), CharTokenizer()

    monkeypatch.setattr(job, "load_engine", engine)
    args = [
        "eval",
        "--datasets",
        "hotpotqa,musique",
        "--method",
        "direct,naive-rag",
        "--limit",
        "5",
        "--data-dir",
        str(DATA),
        "--output-dir",
        str(tmp_path),
        "--index-cache-dir",
        str(tmp_path / "indexes"),
    ]
    out = CliRunner().invoke(cli.app, args)
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [m["method"] for m in report["methods"]] == ["direct", "naive-rag"]
    assert [d["n"] for d in report["methods"][1]["datasets"]] == [5, 5]
    lines = (tmp_path / "predictions_naive-rag.jsonl").read_text().splitlines()
    assert len(lines) == 10
    first = json.loads(lines[0])
    assert first["prediction"] == "yes"
    assert first["retrieval_recall"] is not None
    assert "Naive RAG" in (tmp_path / "report.md").read_text()


BASELINES = Path(__file__).resolve().parents[2] / "docs" / "eval-baselines"


def test_baseline_report_renders_identically_from_the_paper_table() -> None:
    """docs/eval-baselines: the stored report's paper column is the table file's, and it renders to report.md."""
    from worker.rl.evaluation.paper import agent_r1_table
    from worker.rl.evaluation.report import render_markdown

    report = json.loads((BASELINES / "report.json").read_text())
    table = agent_r1_table().exact_match
    for method in report["methods"]:
        row = table.get(method["paper_row"] or "")
        for d in method["datasets"]:
            assert d["paper_em"] == (row[d["dataset"]] if row else None)
        if row:
            expected = sum(row[d["dataset"]] for d in method["datasets"]) / len(method["datasets"])
            assert method["average"]["paper_em"] == pytest.approx(expected, abs=1e-12)
    assert report["paper"] == agent_r1_table().paper
    assert render_markdown(report) == (BASELINES / "report.md").read_text()


def test_api_serves_the_same_paper_table() -> None:
    from backend.api.routes import evaluations

    assert evaluations.agent_r1_table().exact_match == PAPER_EM


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "holds no records"),
        ('[{"_id": "a", "question": "q?", "answer": "x", "context": [["T", ["s."]]]}, {"_id": "b"', "truncated"),
        ('{"_id": "a", "answer": "x", "context": [["T", ["s."]]], "supporting_facts": []}\n', "question"),
        ('{"_id": "a", "question": "q?"\n', "line 1"),
    ],
    ids=["empty", "truncated", "missing-field", "bad-line"],
)
def test_cli_eval_bad_dataset_file_is_one_line_exit_2(tmp_path: Path, content: str, expected: str) -> None:
    from typer.testing import CliRunner

    from worker.rl.evaluation import cli

    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    args = ["eval", "--datasets", f"hotpotqa={bad}", "--method", "direct", "--output-dir", str(tmp_path / "out")]
    out = CliRunner().invoke(cli.app, args)
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1, out.output
    assert str(bad) in lines[0]
    assert expected in lines[0]


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark samples not found at {DATA}")
def test_cli_eval_max_passage_chars_cuts_the_passages_the_model_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from worker.rl.evaluation import cli, job

    prompts: list[str] = []

    def engine(model: str, engine: str, max_batch_size: int) -> tuple[ScriptedGenerator, CharTokenizer]:
        def reply(prompt: str) -> str:
            prompts.append(prompt)
            return "yes</answer>"

        return ScriptedGenerator(CharTokenizer(), reply), CharTokenizer()

    monkeypatch.setattr(job, "load_engine", engine)
    lengths = {}
    for chars in (400, 40):
        prompts.clear()
        args = [
            "eval",
            "--datasets",
            "hotpotqa",
            "--method",
            "naive-rag",
            "--limit",
            "3",
            "--data-dir",
            str(DATA),
            "--output-dir",
            str(tmp_path / str(chars)),
            "--index-cache-dir",
            str(tmp_path / "indexes"),
            "--max-passage-chars",
            str(chars),
        ]
        out = CliRunner().invoke(cli.app, args)
        assert out.exit_code == 0, out.output
        lengths[chars] = sum(len(p) for p in prompts)
        passages = [line for p in prompts for line in p.splitlines() if line.startswith("Doc ")]
        assert passages
        if chars == 40:  # "Doc N (Title: ...) " + at most 40 characters of text (the cut ends in "...")
            assert all(len(line.split(") ", 1)[1]) <= 40 for line in passages), passages[:3]
    assert lengths[40] < lengths[400]


def test_eval_request_refuses_a_tiny_passage_cut() -> None:
    with pytest.raises(ValueError, match=r"max_passage_chars must be >= 20"):
        EvalRequest(max_passage_chars=5)
