"""`bench/table3.py` on a tiny budget: a tiny random model as the checkpoint and the baselines, 2 examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import table3

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.mark.skipif(not (DATA / "hotpotqa" / "dev_sample.json").is_file(), reason="no shared benchmark samples")
def test_table3_writes_the_report(tmp_path: Path) -> None:
    from tests.e2e.conftest import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    run_dir = tmp_path / "run-rloo"  # a run dir: newest checkpoint + its recorded estimator
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_00001").symlink_to(model, target_is_directory=True)
    (run_dir / "config.resolved.json").write_text(json.dumps({"algorithm": {"estimator": "rloo"}}))
    out = tmp_path / "table3"
    table3.main(
        [
            "--checkpoint",
            str(run_dir),
            "--model",
            str(model),
            "--datasets",
            "hotpotqa",
            "--limit",
            "2",
            "--max-new-tokens",
            "8",
            "--max-turns",
            "2",
            "--engine",
            "hf",
            "--data-dir",
            str(DATA),
            "--output-dir",
            str(out),
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["naive-rag", "base-tool-call", "run-rloo (rloo)"]
    agent = report["rows"][-1]
    assert agent["paper_row"] == "RLOO"
    assert agent["scores"]["hotpotqa"]["n"] == 2
    assert report["settings"]["force_first_search"] is True
    assert report["peak_rss_gb"] > 0
    assert report["cpu_model"]
    assert all(e["wall_s"] > 0 for e in report["entries"])
    markdown = (out / "report.md").read_text()
    assert "| run-rloo (rloo) | RLOO |" in markdown
    assert "peak RSS" in markdown
    assert "smoke run" in markdown.splitlines()[0]
    assert (out / "evals" / "baselines" / "predictions_naive-rag.jsonl").is_file()


def test_retriever_list_is_parsed_and_non_bm25_rows_are_named() -> None:
    from worker.rl.evaluation.comparison import ComparisonRow

    assert table3.parse_args(["--retriever", "bm25, dense"]).retrievers == ["bm25", "dense"]
    assert table3.parse_args([]).retrievers == ["bm25"]
    with pytest.raises(SystemExit):
        table3.parse_args(["--retriever", "tfidf"])
    row = ComparisonRow("naive-rag", "naive-rag", "Naive RAG", {}, None)
    assert [r.label for r in table3.with_retriever([row], "dense")] == ["naive-rag (dense)"]
    assert table3.with_retriever([row], "bm25") == [row]


def _piece(
    path: Path, settings: dict[str, object], rows: list[dict[str, object]], wall_s: float, cpu: str = "Host A"
) -> Path:
    entries = [{"label": r["label"], "checkpoint": None, "estimator": None, "wall_s": wall_s} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"rows": rows, "entries": entries, "settings": settings, "wall_s": wall_s, "peak_rss_gb": 1.5}
    report |= {"cpu_model": cpu, "cpu_flags": ["avx2"]}
    path.write_text(json.dumps(report))
    return path


def _row(label: str, method: str) -> dict[str, object]:
    score = {"em": 0.1, "cover_em": 0.2, "f1": 0.3, "paper_em": None, "n": 5.0}
    return {
        "label": label,
        "method": method,
        "paper_row": None,
        "scores": {"hotpotqa": score, "average": score},
        "tool_calls_per_question": 1.0,
        "run_id": None,
    }


def test_table3_reuse_merges_pieces_baselines_first(tmp_path: Path) -> None:
    args = ["--datasets", "hotpotqa", "--limit", "5", "--data-dir", str(DATA)]
    settings = table3._jsonable(
        {
            "model": "smollm2-135m",
            "datasets": ["hotpotqa"],
            "limit": 5,
            "seed": 0,
            "max_turns": 3,
            "max_new_tokens": 48,
            "top_k": 3,
            "max_passage_chars": 400,
            "force_first_search": True,
            "forced_search_turns": 1,
            "answer_on_last_turn": False,
            "engine": "auto",
            "retrievers": ["bm25"],
        }
    )
    agent = _piece(tmp_path / "a" / "report.json", settings, [_row("run-a (grpo)", "agent")], 10.0, cpu="Host B")
    base = _piece(tmp_path / "b" / "report.json", settings, [_row("naive-rag", "naive-rag")], 5.0)
    dense = {**settings, "retrievers": ["dense"]}  # a dense piece joins the bm25 table: its row names its retriever
    base_dense = _piece(tmp_path / "d" / "report.json", dense, [_row("naive-rag (dense)", "naive-rag")], 2.0)
    out = tmp_path / "table"
    pieces = ["--reuse", str(agent), "--reuse", str(base), "--reuse", str(base_dense)]
    table3.main([*args, "--baselines", "", *pieces, "--output-dir", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["naive-rag", "naive-rag (dense)", "run-a (grpo)"]
    assert report["settings"]["retrievers"] == ["bm25", "dense"]
    assert report["wall_s"] >= 17.0
    assert report["peak_rss_gb"] >= 1.5
    assert all(e["reused"] for e in report["entries"])
    hosts = {e["label"]: e["cpu_model"] for e in report["entries"]}
    assert hosts == {"run-a (grpo)": "Host B", "naive-rag": "Host A", "naive-rag (dense)": "Host A"}
    markdown = (out / "report.md").read_text()
    assert "summed over this run and 3 reused report(s)" in markdown
    assert "| run-a (grpo) | – | – | bm25 | 10.0 | Host B (avx2) |" in markdown, "each piece keeps its own host"

    other = _piece(tmp_path / "c" / "report.json", {**settings, "limit": 50}, [_row("x", "agent")], 1.0)
    with pytest.raises(SystemExit, match=r"limit: 50 there, 5 here"):
        table3.main([*args, "--baselines", "", "--reuse", str(other), "--output-dir", str(out)])
    with pytest.raises(SystemExit, match="no such file"):
        table3.main([*args, "--baselines", "", "--reuse", str(tmp_path / "none.json"), "--output-dir", str(out)])
