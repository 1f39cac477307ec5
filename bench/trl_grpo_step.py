"""Seconds per step of TRL's `GRPOTrainer` on the studio's reference GRPO step, to compare side by side.

Same model (the bundled SmolLM2-135M, float32 weights; bf16 autocast where `compute_dtype=auto` picks it), same
prompts in the same order (the studio trainer's seeded task sampler over the HotpotQA dev sample), 4 prompts x 4
generations, the same search tool (the studio's BM25 top-3 over the same corpus, called as a Python function),
<= 3 assistant turns (2 tool-calling iterations), the studio's total token budget per episode, exact-match
reward, one optimizer pass per generation batch, no reference model (kl_coef 0 in the reference config).

TRL renders the tool schemas with the Qwen2.5 chat template (ChatML with Hermes `<tool_call>` JSON, the format
the studio's parser reads, and the special tokens SmolLM2's tokenizer already has); TRL caps the whole
completion, not each turn, so the generated-token counts are printed for both. Run from the repo root, ideally
right after `python -m bench.grpo_step` on the same host:
`python -m bench.trl_grpo_step [--steps 3] [--threads N]`.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from typing import Any

import torch

from bench.grpo_step import reference_config, step_lines
from bench.hostperf import cpu_flags, cpu_model
from worker.rl.rewards.qa_metrics import exact_match_score
from worker.rl.tools.parsing import extract_answer
from worker.rl.training.build import TaskSampler, build_components
from worker.rl.types import ToolCall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-gradient-checkpointing", action="store_true", help="Keep every activation (more memory).")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import add_response_schema, qwen2_5_chat_template

    config = reference_config(args.steps, "hf", gradient_checkpointing=not args.no_gradient_checkpointing)
    comps = build_components(config)
    env = comps.env_factory()
    rollout = config.rollout

    # The same prompts the studio trainer would roll out, in its order: one seeded sampler, step after step.
    sampler = TaskSampler(len(comps.train_tasks), config.seed)
    tasks = [comps.train_tasks[i] for _ in range(args.steps) for i in sampler.sample(rollout.prompts_per_step)]
    rows = []
    for task in tasks:
        messages = env.initial_messages(task)
        rows.append(
            {"prompt": [{"role": m.role, "content": m.content} for m in messages], "answers": list(task.answers)}
        )
    dataset = Dataset.from_list(rows)

    def search(query: str) -> str:
        """Search the knowledge base and return the top passages.

        Args:
            query: A short search query.
        """
        return env.toolset.run([ToolCall(name="search", arguments={"query": query})])[0].content

    def exact_match(completions: list[list[dict[str, Any]]], answers: list[list[str]], **_: Any) -> list[float]:
        scores = []
        for messages, golds in zip(completions, answers, strict=True):
            final = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "assistant"), "")
            predicted = extract_answer(final)
            scores.append(0.0 if predicted is None else exact_match_score(predicted, golds))
        return scores

    tokenizer = comps.tokenizer
    tokenizer.chat_template = qwen2_5_chat_template
    tokenizer = add_response_schema(tokenizer)
    prompt_tokens = [
        len(
            tokenizer.apply_chat_template(
                r["prompt"], tools=[search], add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
        for r in rows
    ]
    bf16 = config.model.compute_dtype == "bfloat16"
    batch = rollout.prompts_per_step * rollout.group_size
    with tempfile.TemporaryDirectory() as out:
        trl_args = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=bf16,
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            per_device_train_batch_size=batch,
            num_generations=rollout.group_size,
            steps_per_generation=1,
            max_steps=args.steps,
            shuffle_dataset=False,
            seed=config.seed,
            learning_rate=config.optim.lr,
            max_grad_norm=config.optim.max_grad_norm,
            warmup_steps=0,
            beta=config.algorithm.kl_coef,
            epsilon=config.algorithm.clip_low,
            epsilon_high=config.algorithm.clip_high,
            temperature=rollout.temperature,
            top_p=rollout.top_p,
            max_completion_length=rollout.max_total_tokens - max(prompt_tokens),
            max_tool_calling_iterations=rollout.max_turns - 1,
            gradient_checkpointing=config.model.gradient_checkpointing,
        )
        step_s: list[float] = []
        logs: list[dict[str, float]] = []

        class Timer(TrainerCallback):  # type: ignore[misc]
            def on_step_begin(self, *_: Any, **__: Any) -> None:
                self.started = time.perf_counter()

            def on_step_end(self, *_: Any, **__: Any) -> None:
                step_s.append(time.perf_counter() - self.started)

            def on_log(
                self, _args: Any, _state: Any, _control: Any, logs_: dict[str, float] | None = None, **__: Any
            ) -> None:
                if logs_:
                    logs.append(dict(logs_))

        trainer = GRPOTrainer(
            model=comps.model,
            reward_funcs=exact_match,
            args=trl_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            tools=[search],
            callbacks=[Timer()],
        )
        started = time.perf_counter()
        trainer.train()
        total_s = time.perf_counter() - started
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2

    print(
        f"CPU: {cpu_model()}; flags: {' '.join(cpu_flags()) or 'none of avx2/avx512'}; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"TRL GRPOTrainer on the reference step: {args.steps} steps, batch {batch} ({rollout.prompts_per_step} "
        f"prompts x {rollout.group_size}), <= {rollout.max_turns} turns, bf16 autocast {bf16}, total {total_s:.1f} s"
    )
    print(f"prompt tokens (TRL's template with its tool block): min {min(prompt_tokens)}, max {max(prompt_tokens)}")
    keys = (
        "completions/mean_length",
        "completions/max_length",
        "tools/call_frequency",
        "tools/failure_frequency",
        "reward",
        "loss",
    )
    for row in logs:
        print({k: row[k] for k in keys if k in row})
    print("\n".join(step_lines(step_s, peak_rss_gb)))


if __name__ == "__main__":
    main()
