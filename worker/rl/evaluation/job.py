"""One evaluation request (the studio's Evaluate tab) → benchmark runs → the `build_report` dict.

The request is plain data (`EvalRequest.from_dict` validates it and names a bad key);
default dataset files live under `data_dir` in their release formats. The `agent`
method evaluates a trained checkpoint (exported once to a `from_pretrained` folder).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.rl.envs.base import EnvConfig
from worker.rl.envs.qa import FORCE_FIRST_SEARCH_PREFILL, QA_SYSTEM_PROMPT
from worker.rl.evaluation.report import build_report, write_report
from worker.rl.evaluation.results import EvalResult
from worker.rl.evaluation.runner import EVAL_METHODS, evaluate
from worker.rl.rollout import RolloutLimits
from worker.rl.types import Task

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
    force_first_search: bool = False
    """Prefill the first turn with a search call."""
    agent_algorithm: str = "GRPO"
    """Paper row the `agent` method is compared with."""

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ValueError("datasets is empty; give at least one of hotpotqa, 2wiki, musique")
        bad = [m for m in self.methods if m not in EVAL_METHODS]
        if not self.methods or bad:
            raise ValueError(f"methods {list(self.methods)} invalid; choose from {', '.join(EVAL_METHODS)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or null for all examples), got {self.limit}")
        if self.max_turns < 1 or self.max_new_tokens < 1 or self.top_k < 1:
            raise ValueError("max_turns, max_new_tokens and top_k must all be >= 1")

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


def dataset_sources(names: Sequence[str], data_dir: Path) -> dict[str, str]:
    """Name → file (the default sample under `data_dir` when present) or the name itself (hub alias)."""
    out: dict[str, str] = {}
    for item in names:
        name, _, path = item.partition("=")
        local = data_dir / DEFAULT_FILES[name] if name in DEFAULT_FILES else None
        out[name] = path or (str(local) if local is not None and local.is_file() else name)
    return out


def _load_engine(model: str) -> tuple[Any, Any]:
    from worker.rl.generation.factory import make_generator, resolve_engine
    from worker.rl.generation.loading import load_model_and_tokenizer, resolve_model_path

    path = resolve_model_path(model)
    hf_model, tokenizer = load_model_and_tokenizer(model)
    hf_model.eval()
    return make_generator(resolve_engine("auto", model_path=path), hf_model, tokenizer, model_path=path), tokenizer


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


def _load_tasks(request: EvalRequest, data_dir: Path) -> tuple[dict[str, list[Task]], dict[str, list[Task]]]:
    """Seeded eval subsets per dataset, and the full files (their context paragraphs form the BM25 corpus)."""
    from worker.rl.data.qa_formats import load_qa_tasks
    from worker.rl.data.splits import sample_subset

    subsets, full = {}, {}
    for name, source in dataset_sources(request.datasets, data_dir).items():
        full[name] = load_qa_tasks(source, dataset=name)
        subsets[name] = sample_subset(full[name], request.limit, request.seed) if request.limit else full[name]
    return subsets, full


def _bm25_factory(full: dict[str, list[Task]]) -> Callable[[str, Sequence[Task]], Any]:
    from worker.rl.tools.search import BM25Retriever, corpus_from_tasks

    def factory(name: str, tasks: Sequence[Task]) -> Any:
        corpus = corpus_from_tasks(full.get(name) or tasks)
        if not corpus:
            raise ValueError(f"dataset {name!r} has no context paragraphs to index; use a file with context")
        return BM25Retriever.from_passages(corpus)

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


def evaluate_config(
    spec: EvalRequest | Mapping[str, Any],
    *,
    output_dir: str | Path,
    data_dir: str | Path,
    progress: JobProgress | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Run every requested method; write report.json/.md + predictions under `output_dir`; return the report."""
    request = spec if isinstance(spec, EvalRequest) else EvalRequest.from_dict(spec, model=model)
    output_dir = Path(output_dir)
    subsets, full = _load_tasks(request, Path(data_dir))
    per_method = sum(len(t) for t in subsets.values())
    total = per_method * len(request.methods)
    limits = RolloutLimits(max_turns=request.max_turns, max_new_tokens_per_turn=request.max_new_tokens,
                           max_total_tokens=4096)  # fmt: skip
    prefill = FORCE_FIRST_SEARCH_PREFILL if request.force_first_search else ""
    env_config = EnvConfig(system_prompt=QA_SYSTEM_PROMPT, max_turns=request.max_turns, first_turn_prefill=prefill)
    engines: dict[str, tuple[Any, Any]] = {}
    results: list[EvalResult] = []
    for index, method in enumerate(request.methods):
        name = _agent_model(request, output_dir) if method == "agent" else request.model
        generator, tokenizer = engines[name] if name in engines else engines.setdefault(name, _load_engine(name))
        tracker = _Progress(progress, offset=index * per_method, total=total)
        results.append(
            evaluate(
                subsets,
                method=method,  # type: ignore[arg-type]  # validated by EvalRequest
                generator=generator,
                tokenizer=tokenizer,
                retriever_factory=_bm25_factory(full),
                limits=limits,
                top_k=request.top_k,
                seed=request.seed,
                progress=tracker,
                env_config=env_config,
            )
        )
    label = request.model if request.checkpoint_path is None else f"{request.model} (agent: {request.checkpoint_path})"
    write_report(results, output_dir, agent_algorithm=request.agent_algorithm, model=label)
    out = build_report(results, agent_algorithm=request.agent_algorithm, model=label)
    out["request"] = dataclasses.asdict(request)
    return out
