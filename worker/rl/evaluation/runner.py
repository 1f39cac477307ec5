"""Benchmark evaluation: direct, naive RAG, base tool call and trained agent on multi-hop QA.

Every method uses greedy decoding, batched through the engine, and the same
answer extraction (`<answer>` tag, else the last line); tool methods run the
multi-turn `QASearchEnv` through `training.collect.collect_heldout`, the rollout path training's
held-out eval takes. Per dataset we report
EM, cover-EM (Agent-R1's "EM"), F1, turns, tool calls, retrieval recall, speed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from worker.rl.envs.base import EnvConfig
from worker.rl.envs.qa import QA_SYSTEM_PROMPT, QASearchEnv
from worker.rl.evaluation.results import EvalResult, Prediction, summarize
from worker.rl.generation.base import Generator, SamplingParams, Tokenizer
from worker.rl.generation.chat import ChatFormat
from worker.rl.rewards.qa_metrics import score_prediction
from worker.rl.rollout import RolloutLimits
from worker.rl.tools.parsing import extract_answer
from worker.rl.tools.search import Retriever, format_passage, retrieval_recall
from worker.rl.training.collect import collect_heldout, greedy_params
from worker.rl.types import Message, Task, Trajectory

logger = logging.getLogger(__name__)

EvalMethod = Literal["direct", "naive-rag", "base-tool-call", "agent"]
EVAL_METHODS: tuple[str, ...] = ("direct", "naive-rag", "base-tool-call", "agent")
RetrieverFactory = Callable[[str, Sequence[Task]], Retriever]
"""`(dataset name, eval tasks) -> Retriever`; called once per dataset for the retrieval methods."""
ProgressFn = Callable[[str, int, int], None]
"""`(dataset name, examples done, examples total)`."""

BATCH_SIZE = 32
"""Prompts per engine call for the single-turn methods (progress is reported per batch)."""
ANSWER_PREFILL = "<answer>"
DIRECT_SYSTEM = "Answer the question. Write only the short answer inside <answer></answer> tags."
RAG_SYSTEM = "Answer the question using the passages. Write only the short answer inside <answer></answer> tags."
_TOOL_CALL = re.compile(r"<tool_call>.*?(</tool_call>|$)", flags=re.DOTALL)


def extract_prediction(text: str) -> str:
    """The `<answer>` content; else text after an unclosed `<answer>`; else the last non-empty line."""
    tagged = extract_answer(text)
    if tagged is not None:
        return tagged
    if ANSWER_PREFILL in text:
        return text.rsplit(ANSWER_PREFILL, 1)[1].strip()
    lines = [line.strip() for line in _TOOL_CALL.sub("", text).splitlines() if line.strip()]
    if not lines:
        return ""
    return re.sub(r"^(final answer|answer)\s*:\s*", "", lines[-1], flags=re.IGNORECASE)


def _recall(shown_titles: Sequence[str], task: Task) -> float | None:
    return retrieval_recall(shown_titles, task.supporting_titles) if task.supporting_titles else None


def _shown_titles(trajectory: Trajectory, task: Task) -> list[str]:
    """Gold titles that appear as `(Title: X)` in the tool responses (exact, so titles may hold parentheses)."""
    shown = "\n".join(t.text for t in trajectory.turns if t.role == "tool")
    return [title for title in task.supporting_titles if f"(Title: {title})" in shown]


def _scored(
    dataset: str,
    method: str,
    task: Task,
    answer: str,
    num_turns: int,
    num_tool_calls: int,
    recall: float | None,
    generated_tokens: int,
    *,
    trajectory: dict[str, Any] | None = None,
) -> Prediction:
    """`answer` scored against the task's golds, with the episode's shape (turns, tool calls, recall, tokens)."""
    return Prediction(
        dataset=dataset,
        method=method,
        task_id=task.id,
        question=task.question,
        golds=task.answers,
        prediction=answer,
        scores=score_prediction(answer, task.answers),
        num_turns=num_turns,
        num_tool_calls=num_tool_calls,
        retrieval_recall=recall,
        generated_tokens=generated_tokens,
        trajectory=trajectory,
    )


def _single_turn_messages(task: Task, passages_text: str | None) -> list[Message]:
    if passages_text is None:
        return [Message("system", DIRECT_SYSTEM), Message("user", f"Question: {task.question}")]
    user = f"Passages:\n{passages_text}\n\nQuestion: {task.question}"
    return [Message("system", RAG_SYSTEM), Message("user", user)]


def _run_single_turn(
    dataset: str,
    method: str,
    tasks: Sequence[Task],
    *,
    generator: Generator,
    chat: ChatFormat,
    retriever: Retriever | None,
    params: SamplingParams,
    top_k: int,
    max_passage_chars: int,
    progress: ProgressFn | None,
) -> list[Prediction]:
    """Direct answering or naive RAG (retrieve once with the question), `<answer>` prefilled."""
    prefill = list(chat.tokenizer.encode(ANSWER_PREFILL, add_special_tokens=False))
    out: list[Prediction] = []
    for start in range(0, len(tasks), BATCH_SIZE):
        batch = list(tasks[start : start + BATCH_SIZE])
        hits = retriever.search_batch([t.question for t in batch], top_k) if retriever is not None else None
        prompts = []
        for i, task in enumerate(batch):
            docs = (
                None
                if hits is None
                else "\n".join(format_passage(r, p, max_passage_chars) for r, p in enumerate(hits[i], start=1))
            )
            prompts.append(chat.prompt_ids(_single_turn_messages(task, docs), []) + prefill)
        completions = generator.generate(prompts, params)
        for i, (task, completion) in enumerate(zip(batch, completions, strict=True)):
            text = ANSWER_PREFILL + chat.tokenizer.decode(list(completion.token_ids), skip_special_tokens=True)
            answer = extract_prediction(text)
            recall = _recall([p.title for p in hits[i]], task) if hits is not None else None
            out.append(_scored(dataset, method, task, answer, 1, 0, recall, len(completion.token_ids)))
        if progress is not None:
            progress(dataset, len(out), len(tasks))
    return out


def _trajectory_prediction(dataset: str, method: str, task: Task, trajectory: Trajectory) -> Prediction:
    answer = trajectory.final_answer
    if answer is None:
        assistant = [t.text for t in trajectory.turns if t.role == "assistant"]
        answer = extract_prediction(assistant[-1]) if assistant else ""
    recall = _recall(_shown_titles(trajectory, task), task)
    shape = (trajectory.num_turns, trajectory.num_tool_calls, recall, trajectory.response_length)
    return _scored(dataset, method, task, answer, *shape, trajectory=trajectory.to_dict())


def _run_tool_episodes(
    dataset: str,
    method: str,
    tasks: Sequence[Task],
    *,
    generator: Generator,
    chat: ChatFormat,
    retriever: Retriever,
    params: SamplingParams,
    limits: RolloutLimits,
    env_config: EnvConfig,
    top_k: int,
    max_passage_chars: int,
    seed: int,
    progress: ProgressFn | None,
) -> list[Prediction]:
    """Multi-turn episodes in `QASearchEnv` (one greedy sample per task), batched by the rollout."""

    def env_factory() -> QASearchEnv:
        return QASearchEnv(retriever, top_k=top_k, max_passage_chars=max_passage_chars, config=env_config)

    def report(done: int) -> None:
        if progress is not None:
            progress(dataset, done, len(tasks))

    rollout = collect_heldout(
        env_factory,
        generator,
        chat,
        tasks,
        params=params,
        limits=limits,
        seed=seed,
        group_prefix=f"eval-{dataset}-",
        chunk_size=BATCH_SIZE,
        progress=report,
    )
    return [
        _trajectory_prediction(dataset, method, task, traj)
        for task, traj in zip(tasks, rollout.trajectories, strict=True)
    ]


def evaluate(
    datasets: dict[str, list[Task]],
    *,
    method: EvalMethod,
    generator: Generator,
    tokenizer: Tokenizer,
    retriever_factory: RetrieverFactory | None,
    limits: RolloutLimits,
    top_k: int = 3,
    seed: int = 0,
    progress: ProgressFn | None = None,
    env_config: EnvConfig | None = None,
    max_passage_chars: int = 400,
    answer_max_new_tokens: int = 32,
) -> EvalResult:
    """Run one method over every dataset; greedy, so the same seed and model give the same numbers.

    `env_config` (tool methods) defaults to the QA system prompt with `limits.max_turns` turns.
    Single-turn methods prefill `<answer>`, stop at `</answer>` or a newline and generate at most
    `answer_max_new_tokens` (short answers; stops a rambling small model early).
    """
    if method not in EVAL_METHODS:
        raise ValueError(f"method must be one of {', '.join(EVAL_METHODS)}, got {method!r}")
    if method != "direct" and retriever_factory is None:
        raise ValueError(f"method {method!r} needs a retriever_factory (only 'direct' runs without retrieval)")
    chat = ChatFormat(tokenizer)
    params = greedy_params(limits, seed)  # the rollout adds the chat's and the env's stop strings
    answer_params = SamplingParams(
        max_new_tokens=min(limits.max_new_tokens_per_turn, answer_max_new_tokens),
        temperature=0.0,
        stop=("</answer>", "\n"),
        seed=seed,
    )
    config = env_config or EnvConfig(system_prompt=QA_SYSTEM_PROMPT, max_turns=limits.max_turns)
    started = time.perf_counter()
    metrics, predictions = [], []
    for name, tasks in datasets.items():
        t0 = time.perf_counter()
        retriever = retriever_factory(name, tasks) if retriever_factory is not None and method != "direct" else None
        if method in ("direct", "naive-rag"):
            preds = _run_single_turn(
                name,
                method,
                tasks,
                generator=generator,
                chat=chat,
                retriever=retriever,
                params=answer_params,
                top_k=top_k,
                max_passage_chars=max_passage_chars,
                progress=progress,
            )
        else:
            assert retriever is not None  # checked above
            preds = _run_tool_episodes(
                name,
                method,
                tasks,
                generator=generator,
                chat=chat,
                retriever=retriever,
                params=params,
                limits=limits,
                env_config=config,
                top_k=top_k,
                max_passage_chars=max_passage_chars,
                seed=seed,
                progress=progress,
            )
        metrics.append(summarize(name, method, preds, time.perf_counter() - t0))
        predictions.extend(preds)
        logger.info("%s on %s: %s", method, name, metrics[-1].to_dict())
    return EvalResult(
        method=method,
        seed=seed,
        metrics=tuple(metrics),
        predictions=tuple(predictions),
        wall_s=time.perf_counter() - started,
    )
