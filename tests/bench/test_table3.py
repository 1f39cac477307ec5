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
