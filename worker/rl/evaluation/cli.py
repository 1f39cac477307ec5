"""`eval` command: benchmark methods on HotpotQA / 2Wiki / MuSiQue and print the table.

Example: `python -m worker.rl.evaluation.cli eval --datasets hotpotqa,2wiki,musique
--method direct --method naive-rag --limit 30 --data-dir path/to/benchmarks`.
A thin wrapper over `evaluation.job` (the studio's eval job runs the same functions): options →
`EvalRequest` → `run_evaluation` → report files and a rich table. Bad input (an unknown option value,
a missing, malformed, truncated or empty dataset file) prints one line and exits 2. `studio eval`
forwards to `app`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from worker.rl.evaluation import job
from worker.rl.evaluation.job import EvalRequest, dataset_sources, run_evaluation
from worker.rl.evaluation.report import build_report, table_rows, write_report
from worker.rl.evaluation.results import EvalResult
from worker.rl.evaluation.runner import EVAL_METHODS, EvalMethod

logger = logging.getLogger(__name__)
app = typer.Typer(help="Evaluate QA agents on multi-hop benchmarks.", no_args_is_help=True)
console = Console()
if not console.is_terminal:  # piped or logged: rich would wrap the wide results table at 80 columns
    console = Console(width=200)
errors = Console(stderr=True)
DATA_DIR_ENV = "STUDIO_BENCHMARK_DATA_DIR"
"""The studio's `benchmark_data_dir` setting, read as `--data-dir`'s default."""


@app.callback()
def _main() -> None:
    """Keeps `eval` a named subcommand (Typer collapses single-command apps otherwise)."""


def parse_dataset_specs(spec: str, data_dir: Path | None) -> dict[str, str]:
    """`"hotpotqa,2wiki"` or `"mine=path/to/file.jsonl"` → {name: source} (see `job.dataset_sources`)."""
    try:
        return dataset_sources(spec.split(","), data_dir)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def parse_methods(methods: Sequence[str]) -> list[EvalMethod]:
    """Repeated and/or comma-separated method names, validated and de-duplicated in order."""
    names = [m.strip() for item in methods for m in item.split(",") if m.strip()]
    bad = [m for m in names if m not in EVAL_METHODS]
    if bad:
        raise typer.BadParameter(f"unknown method(s) {bad}; choose from {', '.join(EVAL_METHODS)}")
    return list(dict.fromkeys(names))  # type: ignore[arg-type]


def _print_table(results: Sequence[EvalResult], model: str, agent_algorithm: str) -> None:
    rows = table_rows(build_report(results, agent_algorithm=agent_algorithm, model=model))
    table = Table(title=f"Multi-hop QA evaluation ({model})")
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("Method", "Dataset") else "right")
    for row in rows[1:]:
        table.add_row(*row, style="bold" if row[1] == "average" else None)
    console.print(table)
    for r in results:
        tokens = sum(m.generated_tokens for m in r.metrics)
        n = sum(m.n for m in r.metrics)
        rate, tok_rate = n / max(r.wall_s, 1e-9), tokens / max(r.wall_s, 1e-9)
        console.print(f"{r.method}: {n} examples in {r.wall_s:.1f} s ({rate:.2f} ex/s, {tok_rate:.1f} generated tok/s)")


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)
    return typer.Exit(2)


# The option defaults are `EvalRequest`'s (one set for the CLI and the studio's eval job), but for datasets (all three).
@app.command("eval")
def eval_command(
    datasets: Annotated[str, typer.Option(help="Comma list of hotpotqa, 2wiki, musique, or name=path")] = (
        "hotpotqa,2wiki,musique"
    ),
    method: Annotated[list[str], typer.Option(help="direct | naive-rag | base-tool-call | agent (repeatable)")] = [  # noqa: B006
        "direct"
    ],
    model: Annotated[str, typer.Option(help="Base model: alias, local dir or hub id")] = EvalRequest.model,
    checkpoint: Annotated[str | None, typer.Option(help="Trained checkpoint dir for the 'agent' method")] = None,
    limit: Annotated[int | None, typer.Option(help="Examples per dataset (seeded subset)")] = EvalRequest.limit,
    seed: Annotated[int, typer.Option(help="Seed for the subset and the engine")] = EvalRequest.seed,
    data_dir: Annotated[
        Path | None,
        typer.Option(help=f"Folder holding the local benchmark files (default: ${DATA_DIR_ENV}; none = hub names)"),
    ] = None,
    engine: Annotated[str, typer.Option(help="auto | hf | vllm")] = EvalRequest.engine,
    output_dir: Annotated[Path, typer.Option(help="Where report.json/.md and predictions go")] = Path("runs/eval"),
    top_k: Annotated[int, typer.Option(help="Passages per search")] = EvalRequest.top_k,
    max_passage_chars: Annotated[
        int, typer.Option(help="Characters kept of each passage (the recipe's task.max_passage_chars)")
    ] = EvalRequest.max_passage_chars,
    max_turns: Annotated[int, typer.Option(help="Assistant turns per tool episode")] = EvalRequest.max_turns,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per assistant turn")] = EvalRequest.max_new_tokens,
    max_batch_size: Annotated[int, typer.Option(help="Engine batch size")] = EvalRequest.max_batch_size,
    agent_algorithm: Annotated[
        str, typer.Option(help="Paper row the agent is compared with")
    ] = EvalRequest.agent_algorithm,
    force_first_search: Annotated[
        bool, typer.Option(help="Prefill the first turn with a search call (Agent-R1's newest HotpotQA recipe)")
    ] = EvalRequest.force_first_search,
    forced_search_turns: Annotated[
        int, typer.Option(help="With --force-first-search: leading turns that open a search (the recipe's value)")
    ] = EvalRequest.forced_search_turns,
    answer_on_last_turn: Annotated[
        bool, typer.Option(help="Prefill <answer> on the last allowed turn (the multihop recipe's scaffold)")
    ] = EvalRequest.answer_on_last_turn,
    retriever: Annotated[
        str, typer.Option(help="How search ranks the corpus: bm25 | dense (bundled all-MiniLM-L6-v2)")
    ] = EvalRequest.retriever,
    index_cache_dir: Annotated[
        Path | None, typer.Option(help="Cache for corpus indexes (BM25; dense defaults to var/cache/indexes)")
    ] = None,
) -> None:
    """Evaluate methods on the datasets and print EM / cover-EM / F1 beside the paper's numbers."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.perf_counter()
    if data_dir is None and os.environ.get(DATA_DIR_ENV, "").strip():
        data_dir = Path(os.environ[DATA_DIR_ENV]).expanduser()
    if "agent" in parse_methods(method) and checkpoint is None:
        console.print("[yellow]agent: no --checkpoint given, evaluating the base model with the agent setup")
    try:
        request = EvalRequest(
            model=model,
            datasets=tuple(s.strip() for s in datasets.split(",") if s.strip()),
            methods=tuple(parse_methods(method)),
            limit=limit,
            seed=seed,
            checkpoint_path=checkpoint,
            max_turns=max_turns,
            max_new_tokens=max_new_tokens,
            top_k=top_k,
            retriever=retriever,
            max_passage_chars=max_passage_chars,
            force_first_search=force_first_search,
            forced_search_turns=forced_search_turns,
            answer_on_last_turn=answer_on_last_turn,
            agent_algorithm=agent_algorithm,
            engine=engine,
            max_batch_size=max_batch_size,
        )
        results = run_evaluation(
            request,
            output_dir=output_dir,
            data_dir=data_dir,
            index_cache_dir=index_cache_dir,
            engine_loader=job.load_engine,
        )
    except ValueError as err:  # DatasetError included: file, record/line and field are in the message
        raise _fail(str(err)) from None
    paths = write_report(results, output_dir, agent_algorithm=agent_algorithm, model=request.label)
    _print_table(results, request.label, agent_algorithm)
    console.print(f"total wall time {time.perf_counter() - started:.1f} s; report: {paths['markdown']}")


if __name__ == "__main__":
    app()
