"""`eval` command: benchmark methods on HotpotQA / 2Wiki / MuSiQue and print the table.

Example: `python -m worker.rl.evaluation.cli eval --datasets hotpotqa,2wiki,musique
--method direct --method naive-rag --limit 30 --data-dir ../shared/data`.
The lead mounts `app` under the `studio` CLI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from worker.rl.data.qa_formats import canonical_dataset_name, load_qa_tasks
from worker.rl.data.splits import sample_subset
from worker.rl.envs.base import EnvConfig
from worker.rl.envs.qa import FORCE_FIRST_SEARCH_PREFILL, QA_SYSTEM_PROMPT
from worker.rl.evaluation.job import loadable_checkpoint
from worker.rl.evaluation.report import build_report, table_rows, write_report
from worker.rl.evaluation.results import EvalResult
from worker.rl.evaluation.runner import EVAL_METHODS, EvalMethod, evaluate
from worker.rl.rollout import RolloutLimits
from worker.rl.tools.search import BM25Retriever, Retriever, corpus_from_tasks
from worker.rl.types import Task

logger = logging.getLogger(__name__)
app = typer.Typer(help="Evaluate QA agents on multi-hop benchmarks.", no_args_is_help=True)
console = Console()
if not console.is_terminal:  # piped or logged: rich would wrap the wide results table at 80 columns
    console = Console(width=200)


@app.callback()
def _main() -> None:
    """Keeps `eval` a named subcommand (Typer collapses single-command apps otherwise)."""


DEFAULT_FILES: dict[str, str] = {
    "hotpotqa": "hotpotqa/dev_sample.json",
    "2wiki": "2wiki/dev_sample.json",
    "musique": "musique/dev_sample.jsonl",
}
"""Default local file per dataset, relative to `--data-dir`."""


def parse_dataset_specs(spec: str, data_dir: Path) -> dict[str, str]:
    """`"hotpotqa,2wiki"` or `"mine=path/to/file.jsonl"` → {name: source}; unknown names are used as sources."""
    out: dict[str, str] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if "=" in item:
            name, source = item.split("=", 1)
            out[canonical_dataset_name(name)] = source
            continue
        name = canonical_dataset_name(item)
        local = data_dir / DEFAULT_FILES[name] if name in DEFAULT_FILES else None
        out[name] = str(local) if local is not None and local.is_file() else item
    if not out:
        raise typer.BadParameter("give at least one dataset, e.g. --datasets hotpotqa,2wiki,musique")
    return out


def parse_methods(methods: Sequence[str]) -> list[EvalMethod]:
    """Repeated and/or comma-separated method names, validated and de-duplicated in order."""
    names = [m.strip() for item in methods for m in item.split(",") if m.strip()]
    bad = [m for m in names if m not in EVAL_METHODS]
    if bad:
        raise typer.BadParameter(f"unknown method(s) {bad}; choose from {', '.join(EVAL_METHODS)}")
    return list(dict.fromkeys(names))  # type: ignore[arg-type]


def _load_datasets(sources: dict[str, str], limit: int | None, seed: int) -> tuple[dict[str, list[Task]], dict]:
    """Eval subsets and the full task lists (the BM25 corpus pools every context paragraph of the file)."""
    subsets, full = {}, {}
    for name, source in sources.items():
        tasks = load_qa_tasks(source, dataset=name)
        full[name] = tasks
        subsets[name] = sample_subset(tasks, limit, seed) if limit is not None else tasks
        logger.info("%s: %d tasks from %s, evaluating %d", name, len(tasks), source, len(subsets[name]))
    return subsets, full


def _bm25_factory(full: dict[str, list[Task]], cache_dir: Path | None) -> Any:
    def factory(name: str, tasks: Sequence[Task]) -> Retriever:
        corpus = corpus_from_tasks(full.get(name) or tasks)
        if not corpus:
            raise typer.BadParameter(f"dataset {name!r} has no context paragraphs to index; use a file with context")
        return BM25Retriever.from_passages(corpus, cache_dir=cache_dir)

    return factory


def _load_engine(model: str, engine: str, max_batch_size: int) -> tuple[Any, Any]:
    from worker.rl.generation.factory import make_generator
    from worker.rl.generation.loading import load_model_and_tokenizer, resolve_model_path

    path = resolve_model_path(model)
    hf_model, tokenizer = load_model_and_tokenizer(model)
    hf_model.eval()
    generator = make_generator(engine, hf_model, tokenizer, model_path=path, max_batch_size=max_batch_size)
    return generator, tokenizer


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
        console.print(f"{r.method}: {n} examples in {r.wall_s:.1f} s ({n / max(r.wall_s, 1e-9):.2f} ex/s, "
                      f"{tokens / max(r.wall_s, 1e-9):.1f} generated tok/s)")  # fmt: skip


@app.command("eval")
def eval_command(
    datasets: Annotated[str, typer.Option(help="Comma list of hotpotqa, 2wiki, musique, or name=path")] = (
        "hotpotqa,2wiki,musique"
    ),
    method: Annotated[list[str], typer.Option(help="direct | naive-rag | base-tool-call | agent (repeatable)")] = [  # noqa: B006
        "direct"
    ],
    model: Annotated[str, typer.Option(help="Base model: alias, local dir or hub id")] = "smollm2-135m",
    checkpoint: Annotated[str | None, typer.Option(help="Trained checkpoint dir for the 'agent' method")] = None,
    limit: Annotated[int | None, typer.Option(help="Examples per dataset (seeded subset)")] = 30,
    seed: Annotated[int, typer.Option(help="Seed for the subset and the engine")] = 0,
    data_dir: Annotated[Path, typer.Option(help="Folder holding the local benchmark files")] = Path("../shared/data"),
    engine: Annotated[str, typer.Option(help="auto | hf | vllm")] = "auto",
    output_dir: Annotated[Path, typer.Option(help="Where report.json/.md and predictions go")] = Path("runs/eval"),
    top_k: Annotated[int, typer.Option(help="Passages per search")] = 3,
    max_turns: Annotated[int, typer.Option(help="Assistant turns per tool episode")] = 3,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per assistant turn")] = 96,
    max_batch_size: Annotated[int, typer.Option(help="Engine batch size")] = 32,
    agent_algorithm: Annotated[str, typer.Option(help="Paper row the agent is compared with")] = "GRPO",
    force_first_search: Annotated[
        bool, typer.Option(help="Prefill the first turn with a search call (Agent-R1's newest HotpotQA recipe)")
    ] = False,
    bm25_cache_dir: Annotated[Path | None, typer.Option(help="Cache for BM25 indexes")] = None,
) -> None:
    """Evaluate methods on the datasets and print EM / cover-EM / F1 beside the paper's numbers."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    methods = parse_methods(method)
    started = time.perf_counter()
    subsets, full = _load_datasets(parse_dataset_specs(datasets, data_dir), limit, seed)
    limits = RolloutLimits(max_turns=max_turns, max_new_tokens_per_turn=max_new_tokens,
                           max_total_tokens=4096)  # fmt: skip
    factory = _bm25_factory(full, bm25_cache_dir)
    env_config = EnvConfig(
        system_prompt=QA_SYSTEM_PROMPT,
        max_turns=max_turns,
        first_turn_prefill=FORCE_FIRST_SEARCH_PREFILL if force_first_search else "",
    )
    base = _load_engine(model, engine, max_batch_size) if any(m != "agent" for m in methods) else None
    agent_model = loadable_checkpoint(checkpoint, output_dir) if checkpoint and "agent" in methods else None
    results = []
    for name in methods:
        if name == "agent" and checkpoint is None:
            console.print("[yellow]agent: no --checkpoint given, evaluating the base model with the agent setup")
        generator, tokenizer = (
            _load_engine(agent_model, engine, max_batch_size)
            if (name == "agent" and agent_model is not None)
            else (base or _load_engine(model, engine, max_batch_size))
        )
        results.append(
            evaluate(
                subsets,
                method=name,
                generator=generator,
                tokenizer=tokenizer,
                retriever_factory=factory,
                limits=limits,
                top_k=top_k,
                seed=seed,
                env_config=env_config,
            )
        )
    label = model if checkpoint is None else f"{model} (agent: {checkpoint})"
    paths = write_report(results, output_dir, agent_algorithm=agent_algorithm, model=label)
    _print_table(results, label, agent_algorithm)
    console.print(f"total wall time {time.perf_counter() - started:.1f} s; report: {paths['markdown']}")


if __name__ == "__main__":
    app()
