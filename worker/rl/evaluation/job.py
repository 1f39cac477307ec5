"""One evaluation request → benchmark runs → the `build_report` dict; the one evaluation path.

The studio's Evaluate tab (through the eval job) and `studio eval` (a thin wrapper) both build an
`EvalRequest` (`from_dict` validates it and names a bad key) and call `run_evaluation`. Default
dataset files live under `data_dir` in their release formats. The `agent` method evaluates a
trained checkpoint (exported once to a `from_pretrained` folder). Each engine is loaded once.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from worker.rl.data.qa_names import DatasetError, canonical_dataset_name
from worker.rl.envs.base import EnvConfig
from worker.rl.envs.qa import FORCE_FIRST_SEARCH_PREFILL, QA_SYSTEM_PROMPT
from worker.rl.evaluation.report import PAPER_EM, build_report, write_report
from worker.rl.evaluation.results import EvalResult
from worker.rl.evaluation.runner import EVAL_METHODS, EvalMethod, evaluate
from worker.rl.rollout import RolloutLimits
from worker.rl.tools.search import Retriever
from worker.rl.types import Task
from worker.rl.vocab import ENGINES, RETRIEVERS, check_forced_searches

logger = logging.getLogger(__name__)

DEFAULT_FILES: dict[str, str] = {
    "hotpotqa": "hotpotqa/dev_sample.json",
    "2wiki": "2wiki/dev_sample.json",
    "musique": "musique/dev_sample.jsonl",
}
"""Default local file per dataset name, relative to `data_dir`."""
JobProgress = Callable[[int, int], None]
"""`(examples done, examples total)` over every method and dataset of the request."""


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate: datasets × methods on a base model and/or a trained checkpoint."""

    model: str = "smollm2-135m"
    """Base model (alias, local dir or hub id)."""
    datasets: tuple[str, ...] = ("hotpotqa",)
    """Dataset names (hotpotqa, 2wiki, musique) or `name=path` for a local file."""
    methods: tuple[str, ...] = ("direct",)
    """direct | naive-rag | base-tool-call | agent."""
    limit: int | None = 30
    """Examples per dataset (a seeded subset); None = all."""
    seed: int = 0
    """Seed of the subset and of the engine."""
    checkpoint_path: str | None = None
    """Trained checkpoint dir the `agent` method evaluates (else the base model)."""
    checkpoint_run_id: int | None = None
    """The train run the checkpoint came from (recorded in the report)."""
    checkpoint_step: int | None = None
    """Its step (recorded in the report)."""
    max_turns: int = 3
    """Assistant turns per tool episode."""
    max_new_tokens: int = 96
    """Tokens per assistant turn."""
    top_k: int = 3
    """Passages per search."""
    retriever: str = "bm25"
    """How search ranks each dataset's corpus: bm25 | dense (the bundled all-MiniLM-L6-v2)."""
    max_passage_chars: int = 400
    """Characters kept of each passage a search returns (the recipe's `task.max_passage_chars`)."""
    force_first_search: bool = False
    """Prefill the first turn with a search call."""
    forced_search_turns: int = 1
    """With `force_first_search`: leading turns that open a search call (the recipe's `task.forced_search_turns`)."""
    answer_on_last_turn: bool = False
    """Prefill the opening answer tag on the last allowed turn (the recipe's `task.answer_on_last_turn`)."""
    agent_algorithm: str = "GRPO"
    """Paper row the `agent` method is compared with."""
    engine: str = "auto"
    """Rollout engine: auto | hf | vllm."""
    max_batch_size: int = 32
    """Most sequences per engine call."""

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ValueError("datasets is empty; give at least one of hotpotqa, 2wiki, musique")
        bad = [m for m in self.methods if m not in EVAL_METHODS]
        if not self.methods or bad:
            raise ValueError(f"methods {list(self.methods)} invalid; choose from {', '.join(EVAL_METHODS)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or null for all examples), got {self.limit}")
        if self.max_turns < 1 or self.max_new_tokens < 1 or self.top_k < 1 or self.max_batch_size < 1:
            raise ValueError("max_turns, max_new_tokens, top_k and max_batch_size must all be >= 1")
        if self.max_passage_chars < 20:
            raise ValueError(
                f"max_passage_chars must be >= 20 (the recipe's task.max_passage_chars); got {self.max_passage_chars}"
            )
        check_forced_searches(self.forced_search_turns, self.force_first_search, self.max_turns)
        if self.agent_algorithm not in PAPER_EM:
            raise ValueError(f"agent_algorithm must be one of {', '.join(PAPER_EM)}; got {self.agent_algorithm!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"retriever must be one of {', '.join(RETRIEVERS)}; got {self.retriever!r}")

    @property
    def eval_methods(self) -> list[EvalMethod]:
        """`methods`, checked against `EVAL_METHODS` in `__post_init__`."""
        return [cast(EvalMethod, m) for m in self.methods]

    @property
    def label(self) -> str:
        """The model column of the report: the base model, and the checkpoint when one is evaluated."""
        return self.model if self.checkpoint_path is None else f"{self.model} (agent: {self.checkpoint_path})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, model: str | None = None) -> EvalRequest:
        """Build from an eval run's `eval_spec`; unknown keys raise ValueError listing the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"eval spec: unknown key(s) {unknown}; valid keys: {', '.join(sorted(names))}")
        values = dict(data)
        for key in ("datasets", "methods"):
            if key in values:
                raw = values[key]
                values[key] = tuple(s.strip() for s in raw.split(",")) if isinstance(raw, str) else tuple(raw)
        if model:
            values.setdefault("model", model)
        return cls(**values)


def dataset_sources(names: Sequence[str], data_dir: Path | None) -> dict[str, str]:
    """`hotpotqa`, `2WikiMultihopQA` or `mine=path/file.jsonl` → {canonical name: source}.

    A known name maps to its default sample under `data_dir` when that file exists, else to the name
    itself (a hub alias, loaded when online). `data_dir` None = no local benchmark folder configured.
    """
    if data_dir is not None and not data_dir.is_dir():
        raise DatasetError(
            f"benchmark data dir {str(data_dir)!r} is not a folder; point --data-dir / STUDIO_BENCHMARK_DATA_DIR "
            "at a folder holding hotpotqa/dev_sample.json, 2wiki/dev_sample.json, musique/dev_sample.jsonl"
        )
    out: dict[str, str] = {}
    for item in (s.strip() for s in names if s.strip()):
        raw_name, sep, path = item.partition("=")
        name = canonical_dataset_name(raw_name)
        local = data_dir / DEFAULT_FILES[name] if data_dir is not None and name in DEFAULT_FILES else None
        out[name] = path.strip() if sep else (str(local) if local is not None and local.is_file() else name)
    if not out:
        raise ValueError("give at least one dataset, e.g. hotpotqa,2wiki,musique")
    return out


def load_engine(model: str, engine: str = "auto", max_batch_size: int = 32) -> tuple[Any, Any]:
    """(generator, tokenizer) for a model alias, folder or hub id, in eval mode."""
    from worker.rl.generation.factory import make_generator
    from worker.rl.generation.loading import load_model_and_tokenizer, resolve_model_path

    path = resolve_model_path(model)
    hf_model, tokenizer = load_model_and_tokenizer(model)
    hf_model.eval()
    generator = make_generator(engine, hf_model, tokenizer, model_path=path, max_batch_size=max_batch_size)
    return generator, tokenizer


def loadable_checkpoint(checkpoint: str | Path, output_dir: Path) -> str:
    """A trainer checkpoint (weights or LoRA adapter, tokenizer in a subfolder) exported once to
    `output_dir/agent_model` as a `from_pretrained` folder; a model folder is used as it is."""
    source = Path(checkpoint)
    if not (source / "trainer_state.json").is_file():
        return str(checkpoint)
    from worker.rl.training.checkpoint import export_hf_model

    target = output_dir / "agent_model"
    marker = target / "exported_from.txt"  # an output dir reused for another checkpoint must not serve the old one
    origin = str(source.resolve())
    if not (target / "config.json").is_file() or not marker.is_file() or marker.read_text() != origin:
        if target.exists():
            shutil.rmtree(target)
        export_hf_model(source, target)
        marker.write_text(origin)
    return str(target)


def _agent_model(request: EvalRequest, output_dir: Path) -> str:
    """The checkpoint as a loadable folder (exported once), or the base model without one."""
    if request.checkpoint_path is None:
        return request.model
    return loadable_checkpoint(request.checkpoint_path, output_dir)


def load_tasks(request: EvalRequest, data_dir: Path | None) -> tuple[dict[str, list[Task]], dict[str, list[Task]]]:
    """Seeded eval subsets per dataset, and the full files (their context paragraphs form the BM25 corpus)."""
    from worker.rl.data.qa_formats import load_qa_tasks
    from worker.rl.data.splits import sample_subset

    subsets, full = {}, {}
    for name, source in dataset_sources(request.datasets, data_dir).items():
        try:
            full[name] = load_qa_tasks(source, dataset=name)
        except DatasetError as err:
            if data_dir is None and source == name and name in DEFAULT_FILES:
                raise DatasetError(
                    f"{err} Or set the benchmark data dir (STUDIO_BENCHMARK_DATA_DIR, or --data-dir for "
                    f"`studio eval`) to a folder holding {DEFAULT_FILES[name]}."
                ) from None
            raise
        if not full[name]:
            raise DatasetError(f"{source}: no examples in the file; give a file with at least one record")
        subsets[name] = sample_subset(full[name], request.limit, request.seed) if request.limit else full[name]
        logger.info("%s: %d tasks from %s, evaluating %d", name, len(full[name]), source, len(subsets[name]))
    return subsets, full


def retriever_factory(
    full: dict[str, list[Task]], kind: str = "bm25", cache_dir: Path | None = None
) -> Callable[[str, Sequence[Task]], Retriever]:
    """Per dataset, a `kind` index (bm25 | dense) over every context paragraph of its full file."""
    from worker.rl.tools.search import build_index, corpus_from_tasks

    def factory(name: str, tasks: Sequence[Task]) -> Retriever:
        corpus = corpus_from_tasks(full.get(name) or tasks)
        if not corpus:
            raise DatasetError(f"dataset {name!r} has no context paragraphs to index; use a file with context")
        return build_index(kind, corpus, cache_dir=cache_dir)

    return factory


class _Progress:
    """Turns the runner's per-dataset `(dataset, done, n)` into the job's overall `(done, total)`."""

    def __init__(self, progress: JobProgress | None, *, offset: int, total: int) -> None:
        self._progress, self._offset, self._total = progress, offset, total
        self._done: dict[str, int] = {}

    def __call__(self, dataset: str, done: int, _n: int) -> None:
        self._done[dataset] = done
        if self._progress is not None:
            self._progress(self._offset + sum(self._done.values()), self._total)


TrajectorySink = Callable[[list[dict[str, Any]]], None]
"""Receives the tool methods' trajectories (`Trajectory.to_dict()`, `group_id` = `example_key`); the eval job
stores them as the eval run's trajectories, so the comparison view links each prediction to its replay."""


def example_key(method: str, dataset: str, task_id: str) -> str:
    """The `group_id` an eval trajectory is stored under: one per (method, dataset, example)."""
    return f"{method}/{dataset}/{task_id}"


def example_rows(results: Sequence[EvalResult]) -> list[dict[str, Any]]:
    """Per-example predictions without trajectories (question, gold, prediction, scores): the report's
    `examples`, which the comparison view pairs across methods by (dataset, task_id)."""
    return [
        {
            "dataset": p.dataset,
            "method": p.method,
            "task_id": p.task_id,
            "question": p.question,
            "gold": list(p.golds),
            "prediction": p.prediction,
            "em": p.scores.em,
            "cover_em": p.scores.cover_em,
            "f1": p.scores.f1,
            "num_tool_calls": p.num_tool_calls,
        }
        for result in results
        for p in result.predictions
    ]


def example_trajectories(results: Sequence[EvalResult]) -> list[dict[str, Any]]:
    """The tool methods' trajectories, each under its `example_key` group."""
    return [
        {**p.trajectory, "group_id": example_key(p.method, p.dataset, p.task_id), "task_id": p.task_id}
        for result in results
        for p in result.predictions
        if p.trajectory is not None
    ]


EngineLoader = Callable[[str, str, int], tuple[Any, Any]]
"""`(model, engine, max_batch_size) -> (generator, tokenizer)`; `load_engine` unless a test passes a fake."""


def run_evaluation(
    request: EvalRequest,
    *,
    output_dir: Path,
    data_dir: Path | None,
    progress: JobProgress | None = None,
    index_cache_dir: Path | None = None,
    engine_loader: EngineLoader = load_engine,
) -> list[EvalResult]:
    """Every requested method over every dataset; each distinct model's engine is loaded once."""
    subsets, full = load_tasks(request, data_dir)
    per_method = sum(len(t) for t in subsets.values())
    total = per_method * len(request.methods)
    limits = RolloutLimits(
        max_turns=request.max_turns, max_new_tokens_per_turn=request.max_new_tokens, max_total_tokens=4096
    )
    prefill = FORCE_FIRST_SEARCH_PREFILL if request.force_first_search else ""
    env_config = EnvConfig(
        system_prompt=QA_SYSTEM_PROMPT,
        max_turns=request.max_turns,
        first_turn_prefill=prefill,
        first_turn_prefill_turns=request.forced_search_turns,
        answer_prefill_on_last_turn=request.answer_on_last_turn,
    )
    factory = retriever_factory(full, request.retriever, index_cache_dir)
    engines: dict[str, tuple[Any, Any]] = {}
    results: list[EvalResult] = []
    for index, method in enumerate(request.eval_methods):
        name = _agent_model(request, output_dir) if method == "agent" else request.model
        if name not in engines:
            engines[name] = engine_loader(name, request.engine, request.max_batch_size)
        generator, tokenizer = engines[name]
        tracker = _Progress(progress, offset=index * per_method, total=total)
        results.append(
            evaluate(
                subsets,
                method=method,
                generator=generator,
                tokenizer=tokenizer,
                retriever_factory=factory,
                limits=limits,
                top_k=request.top_k,
                max_passage_chars=request.max_passage_chars,
                seed=request.seed,
                progress=tracker,
                env_config=env_config,
            )
        )
    return results


def evaluate_config(
    spec: EvalRequest | Mapping[str, Any],
    *,
    output_dir: str | Path,
    data_dir: str | Path | None,
    progress: JobProgress | None = None,
    model: str | None = None,
    trajectories: TrajectorySink | None = None,
    index_cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Run every requested method; write report.json/.md + predictions under `output_dir`; return the report
    with its per-example `examples` (the tool methods' trajectories go to `trajectories`)."""
    request = spec if isinstance(spec, EvalRequest) else EvalRequest.from_dict(spec, model=model)
    output_dir = Path(output_dir)
    results = run_evaluation(
        request,
        output_dir=output_dir,
        data_dir=Path(data_dir) if data_dir is not None else None,
        progress=progress,
        index_cache_dir=index_cache_dir,
    )
    write_report(results, output_dir, agent_algorithm=request.agent_algorithm, model=request.label)
    out = build_report(results, agent_algorithm=request.agent_algorithm, model=request.label)
    out["request"] = dataclasses.asdict(request)
    out["examples"] = example_rows(results)
    if trajectories is not None:
        trajectories(example_trajectories(results))
    return out
