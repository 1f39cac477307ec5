"""Table 3 in miniature: trained checkpoints beside the baselines on the held-out sets, through the one eval path.

    python -m bench.table3 --checkpoint runs/multihop_grpo --checkpoint runs/multihop_rloo --limit 50
    python -m bench.table3 --checkpoint runs/multihop_grpo --retriever bm25,dense   # dense rows of their own

Each `--checkpoint` is a run dir (its newest `checkpoints/step_*` is used, and its `config.resolved.json`
names the estimator, hence the paper row) or a checkpoint folder. Every row uses the same scaffold (prompt,
forced first search, answer prefill) and the same seeded examples of the protocol's held-out sets. Writes
`report.md` + `report.json` (the table from `worker.rl.evaluation.comparison`, each row's wall time, the
CPU model and flags, peak RSS) and every eval's own report and predictions under `<output-dir>/evals/`.
`--retriever` lists the retrievers (bm25, dense): every row is evaluated with each, and a row that did not
search with BM25 carries its retriever in its label, e.g. `naive-rag (dense)`.

`--reuse REPORT_JSON` (repeatable) takes the rows of an earlier `report.json` written with the same settings
(e.g. the baselines, evaluated once while the runs train) into this table instead of evaluating them again.
Only the retrievers may differ (a dense piece joins a bm25 table; its rows name their retriever), and each
piece keeps the host it was measured on: the report names every row's CPU model and flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.hostperf import cpu_flags, cpu_model
from worker.rl.evaluation.comparison import ComparisonRow, method_rows, paper_row_for_estimator, render_markdown
from worker.rl.evaluation.job import EvalRequest, run_evaluation
from worker.rl.evaluation.report import build_report, write_report
from worker.rl.training.checkpoint import CHECKPOINT_DIR
from worker.rl.vocab import RETRIEVERS

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("naive-rag", "base-tool-call")
HELD_OUT = ("hotpotqa", "2wiki", "musique")
MIN_EXAMPLES = 50
"""Examples per held-out set the table needs (issue #14); fewer makes a smoke run, labelled as such."""


def resolve_checkpoint(path: Path) -> tuple[Path, str | None]:
    """(checkpoint folder, estimator or None): a run dir gives its newest checkpoint and its recorded estimator."""
    steps = sorted((path / CHECKPOINT_DIR).glob("step_*")) if (path / CHECKPOINT_DIR).is_dir() else []
    if steps:
        config = path / "config.resolved.json"
        estimator = json.loads(config.read_text())["algorithm"]["estimator"] if config.is_file() else None
        return steps[-1], estimator
    if not path.is_dir():
        raise SystemExit(f"--checkpoint {path}: no such folder; give a run dir or a checkpoint folder")
    config = path.parent.parent / "config.resolved.json"  # <run>/checkpoints/step_N
    estimator = json.loads(config.read_text())["algorithm"]["estimator"] if config.is_file() else None
    return path, estimator


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def evaluate_entry(request: EvalRequest, *, label: str | None, out: Path, data_dir: Path) -> tuple[list[Any], float]:
    """One eval through `run_evaluation` (the one path); its own report under `out`; (table rows, wall s)."""
    started = time.perf_counter()
    results = run_evaluation(request, output_dir=out, data_dir=data_dir)
    wall_s = time.perf_counter() - started
    write_report(results, out, agent_algorithm=request.agent_algorithm, model=request.label)
    report = build_report(results, agent_algorithm=request.agent_algorithm, model=request.label)
    return method_rows(report, label=label), wall_s


def named(label: str, retriever: str) -> str:
    """BM25 rows keep their names (the paper's setting); any other retriever is named in the label."""
    return label if retriever == "bm25" else f"{label} ({retriever})"


def with_retriever(rows: list[ComparisonRow], retriever: str) -> list[ComparisonRow]:
    return [dataclasses.replace(r, label=named(r.label, retriever)) for r in rows]


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def load_reused(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """An earlier report.json whose settings match this table's; a clear error names what differs."""
    if not path.is_file():
        raise SystemExit(f"--reuse {path}: no such file; give the report.json of an earlier bench.table3 run")
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        rows, entries, theirs = earlier["rows"], earlier["entries"], earlier["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise SystemExit(f"--reuse {path}: not a bench.table3 report.json ({err})") from None
    mine = _jsonable(settings)
    # the retrievers may differ: every row names its own (a '(dense)' row), so a dense piece joins a bm25 table
    differ = sorted(k for k in mine.keys() | theirs.keys() if k != "retrievers" and mine.get(k) != theirs.get(k))
    if differ:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
        raise SystemExit(f"--reuse {path}: written with other settings ({shown}); rerun it with these flags")
    host = {"cpu_model": earlier.get("cpu_model", "unknown"), "cpu_flags": earlier.get("cpu_flags", [])}
    return {
        "rows": rows,
        "entries": [{**host, **e} for e in entries],  # a piece measured on another host keeps that host
        "retrievers": list(theirs.get("retrievers", ["bm25"])),
        "wall_s": float(earlier.get("wall_s", 0.0)),
        "peak_rss_gb": float(earlier.get("peak_rss_gb", 0.0)),
    }


def run_table(args: argparse.Namespace) -> dict[str, Any]:
    shared = {
        "model": args.model,
        "datasets": tuple(args.datasets.split(",")),
        "limit": args.limit or None,
        "seed": args.seed,
        "max_turns": args.max_turns,
        "max_new_tokens": args.max_new_tokens,
        "top_k": args.top_k,
        "max_passage_chars": args.max_passage_chars,
        "force_first_search": not args.no_force_first_search,
        "forced_search_turns": args.forced_search_turns,
        "answer_on_last_turn": args.answer_on_last_turn,
        "engine": args.engine,
    }
    # a reused piece must match every setting but the retrievers (its rows name theirs)
    reused = [load_reused(Path(p), {**shared, "retrievers": tuple(args.retrievers)}) for p in args.reuse]
    host = {"cpu_model": cpu_model(), "cpu_flags": cpu_flags()}
    rows: list[ComparisonRow] = []
    entries: list[dict[str, Any]] = []
    started = time.perf_counter()
    for retriever in args.retrievers:
        settings = {**shared, "retriever": retriever}
        suffix = "" if retriever == "bm25" else f"-{retriever}"
        agent_rows: list[ComparisonRow] = []
        for index, raw in enumerate(args.checkpoint):
            checkpoint, estimator = resolve_checkpoint(Path(raw))
            paper_row = paper_row_for_estimator(estimator)
            label = f"{Path(raw).name} ({estimator or 'grpo'})"
            request = EvalRequest(
                **settings, methods=("agent",), checkpoint_path=str(checkpoint), agent_algorithm=paper_row
            )
            out = args.output_dir / "evals" / f"agent-{index}{suffix}"
            new, wall_s = evaluate_entry(request, label=label, out=out, data_dir=args.data_dir)
            agent_rows += with_retriever(new, retriever)
            entries.append(
                {
                    "label": named(label, retriever),
                    "checkpoint": str(checkpoint),
                    "estimator": estimator,
                    "retriever": retriever,
                    "wall_s": wall_s,
                    **host,
                }
            )
        baselines = tuple(b for b in args.baselines.split(",") if b)
        baseline_rows: list[ComparisonRow] = []
        if baselines:
            request = EvalRequest(**settings, methods=baselines)
            out = args.output_dir / "evals" / f"baselines{suffix}"
            new, wall_s = evaluate_entry(request, label=None, out=out, data_dir=args.data_dir)
            baseline_rows = with_retriever(new, retriever)
            entries.append(
                {
                    "label": ", ".join(r.label for r in baseline_rows),
                    "checkpoint": None,
                    "estimator": None,
                    "retriever": retriever,
                    "wall_s": wall_s,
                    **host,
                }
            )
        rows += baseline_rows + agent_rows
    retrievers = list(args.retrievers) if args.checkpoint or args.baselines else []
    for earlier in reused:
        retrievers += [r for r in earlier["retrievers"] if r not in retrievers]
    shared["retrievers"] = tuple(retrievers)
    for earlier in reused:
        rows += [ComparisonRow(**r) for r in earlier["rows"]]
        entries += [{**e, "reused": True} for e in earlier["entries"]]
    rows = [r for r in rows if r.method != "agent"] + [r for r in rows if r.method == "agent"]  # baselines first
    return {
        "rows": [r.to_dict() for r in rows],
        "entries": entries,
        "settings": _jsonable(shared),
        "wall_s": time.perf_counter() - started + sum(e["wall_s"] for e in reused),
        "reused": list(args.reuse),
        "cpu_model": host["cpu_model"],
        "cpu_flags": host["cpu_flags"],
        "peak_rss_gb": max([peak_rss_gb(), *(e["peak_rss_gb"] for e in reused)]),
        "markdown": render_markdown(rows),
    }


def render_report(out: dict[str, Any]) -> str:
    s = out["settings"]
    smoke = s["limit"] is not None and s["limit"] < MIN_EXAMPLES
    lines = [
        "# Table 3 in miniature" + (" (smoke run: too few examples to read as the table)" if smoke else ""),
        "",
        f"Held-out sets: {', '.join(s['datasets'])}, {s['limit'] or 'all'} examples each (seed {s['seed']}); "
        f"model {s['model']}; {s['max_turns']} turns, {' and '.join(s['retrievers'])} top-{s['top_k']} "
        f"({s.get('max_passage_chars', 400)} characters per passage; a row named '(dense)' searched with the bundled "
        "all-MiniLM-L6-v2 embeddings), forced first search "
        f"{s['force_first_search']} ({s.get('forced_search_turns', 1)} leading turns), "
        f"answer prefill on the last turn {s['answer_on_last_turn']}.",
        "",
        out["markdown"],
        "| Row | Checkpoint | Estimator | Retriever | Wall time (s) | Host |",
        "|---|---|---|---|---|---|",
        *[
            f"| {e['label']} | {e['checkpoint'] or '–'} | {e['estimator'] or '–'} | {e.get('retriever', 'bm25')} "
            f"| {e['wall_s']:.1f} | {e['cpu_model']} ({', '.join(e['cpu_flags']) or 'no listed flags'}) |"
            for e in out["entries"]
        ],
        "",
        f"Total wall time {out['wall_s']:.1f} s"
        + (f" (summed over this run and {len(out['reused'])} reused report(s))" if out.get("reused") else "")
        + f"; peak RSS {out['peak_rss_gb']:.2f} GB. Wall times compare only between rows of one host.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="Run dir or checkpoint folder (repeat).")
    parser.add_argument(
        "--baselines", default=",".join(BASELINES), help="Comma list of direct, naive-rag, base-tool-call."
    )
    parser.add_argument("--model", default="smollm2-135m", help="Base model of the baselines.")
    parser.add_argument("--datasets", default=",".join(HELD_OUT))
    parser.add_argument("--limit", type=int, default=50, help="Examples per set (0 = all).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument(
        "--retriever", default="bm25", help=f"Comma list of {', '.join(RETRIEVERS)}: every row once with each."
    )
    parser.add_argument("--max-passage-chars", type=int, default=400, help="The recipe's task.max_passage_chars.")
    parser.add_argument("--no-force-first-search", action="store_true")
    parser.add_argument(
        "--forced-search-turns", type=int, default=1, help="The recipe's task.forced_search_turns (leading searches)."
    )
    parser.add_argument("--answer-on-last-turn", action="store_true", help="The multihop recipe's answer prefill.")
    parser.add_argument("--engine", default="auto", choices=["auto", "hf", "vllm"])
    parser.add_argument("--output-dir", type=Path, default=REPO / "docs" / "table3")
    parser.add_argument(
        "--reuse", action="append", default=[], help="report.json of an earlier run with the same settings (repeat)."
    )
    args = parser.parse_args(argv)
    if not args.checkpoint and not args.baselines and not args.reuse:
        parser.error("give at least one --checkpoint, baseline or --reuse report")
    args.retrievers = [r.strip() for r in args.retriever.split(",") if r.strip()]
    bad = [r for r in args.retrievers if r not in RETRIEVERS]
    if bad or not args.retrievers:
        parser.error(f"--retriever {args.retriever!r}: give a comma list of {', '.join(RETRIEVERS)}")
    if args.limit and args.limit < MIN_EXAMPLES:
        print(f"note: --limit {args.limit} is below {MIN_EXAMPLES} examples per set; a smoke run, not the table")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = run_table(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "report.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    (args.output_dir / "report.md").write_text(render_report(out), encoding="utf-8")
    print(render_report(out))


if __name__ == "__main__":
    main()
