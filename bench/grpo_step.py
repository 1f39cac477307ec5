"""Seconds per GRPO step and peak RSS for the reference CPU config.

Reference (the RL core issue): SmolLM2-135M, 4 prompts x 4 generations, <= 3 turns,
<= 128 new tokens per turn, HotpotQA dev sample from ../shared/data with BM25 top-3.
Targets: <= 90 s per step on 2 cores, peak RSS <= 6 GB. Prints the figures, and with the HF engine
what bounds the rollout (prefilled vs unshared prompt tokens, decode tok/s, achieved fractions of the host's
measured matmul rate and copy bandwidth); run from the repo root:
`python -m bench.grpo_step [--steps 3] [--engine hf] [--no-prefix-cache]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from bench.hostperf import HostPeak, bound_report, cache_line
from worker.rl.generation.hf import HFGenerator
from worker.rl.training.build import build_components, with_resolved_precision
from worker.rl.training.config import TrainConfig, load_config, override
from worker.rl.training.trainer import train

REPO = Path(__file__).resolve().parents[1]


def reference_overrides(steps: int, engine: str) -> list[str]:
    return [
        f"engine.backend={engine}",
        # The reference step predates configs/multihop_cpu.toml: these pin what it measured (one HotpotQA file,
        # the old recipe's passages, temperature, batch and optimizer) so its figures stay comparable.
        "task.source=../shared/data/hotpotqa/dev_sample.json",
        "task.dataset=hotpotqa",
        "task.data_dir=none",
        "task.eval_size=50",
        "task.max_passage_chars=300",
        "task.answer_on_last_turn=false",
        "task.f1_reward_weight=0.0",
        "engine.max_batch_size=32",
        "rollout.temperature=1.0",
        "algorithm.minibatch_size=4",
        "algorithm.loss_agg=auto",
        "optim.lr=2e-6",
        "task.top_k=3",
        "rollout.prompts_per_step=4",
        "rollout.group_size=4",
        "rollout.max_turns=3",
        "rollout.max_new_tokens_per_turn=128",
        f"optim.total_steps={steps}",
        "eval.num_tasks=0",
        # The untrained model rarely scores on HotpotQA, so every group can have zero reward variance and the
        # update would be skipped; a tiny entropy bonus keeps the full update (forward + backward) in the timing.
        "algorithm.entropy_coef=0.0001",
        "logging.save_every_steps=0",
    ]


def reference_config(
    steps: int, engine: str, *, gradient_checkpointing: bool = True, extra: list[str] | tuple[str, ...] = ()
) -> TrainConfig:
    """The reference step's resolved config (shared with `bench.trl_grpo_step`, so both time the same task)."""
    checkpointing = f"model.gradient_checkpointing={str(gradient_checkpointing).lower()}"
    overrides = [*reference_overrides(steps, engine), checkpointing, *extra]
    return with_resolved_precision(override(load_config(REPO / "configs" / "multihop_cpu.toml"), overrides))


def step_lines(step_s: list[float], peak_rss_gb: float, mean_target: str = "", rss_target: str = "") -> list[str]:
    """The closing figures both reference-step benches print: each step, the mean after the first, peak RSS."""
    steady = step_s[1:] or step_s
    return [
        f"step seconds (each): {', '.join(f'{t:.1f}' for t in step_s)}",
        f"step seconds (mean after the first): {sum(steady) / len(steady):.1f}{mean_target}",
        f"peak RSS: {peak_rss_gb:.2f} GB{rss_target}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--engine", default="hf", choices=["hf", "vllm", "auto"])
    parser.add_argument("--no-gradient-checkpointing", action="store_true", help="Keep every activation (more memory).")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra config override, e.g. --set algorithm.share_prefix=false (repeatable).",
    )
    parser.add_argument(
        "--no-prefix-cache", action="store_true", help="Prefill every prompt in full (engine.prefix_cache=false)."
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    extra = [*args.set, *(["engine.prefix_cache=false"] if args.no_prefix_cache else [])]
    config = reference_config(
        args.steps, args.engine, gradient_checkpointing=not args.no_gradient_checkpointing, extra=extra
    )
    comps = build_components(config)
    engine = comps.generator if isinstance(comps.generator, HFGenerator) else None
    stats = getattr(comps.generator, "stats", None)  # EngineStats of the HF and the vLLM engine
    peak = HostPeak.measure(next(engine.model.parameters()).dtype) if engine is not None else None
    step_times: list[float] = []
    rows: list[dict[str, float]] = []
    last = [time.perf_counter()]

    def on_step(step: int, metrics: dict[str, float], _trajectories: object) -> None:
        now = time.perf_counter()
        step_times.append(now - last[0])
        last[0] = now
        row = {"step": step, **{k: v for k, v in metrics.items() if k.startswith(("perf/", "rollout/"))}}
        if stats is not None:
            row |= {"engine/prompt_tokens": stats.prompt_tokens, "engine/prefill_tokens": stats.prefill_tokens}
        rows.append(row)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(config, run_dir=run_dir, on_step=on_step, components=comps)
    total_s = time.perf_counter() - started
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux

    cache = "" if engine is None else f" ({'full re-prefill' if args.no_prefix_cache else 'prefix-shared'})"
    print(
        f"reference GRPO config, engine={args.engine}{cache}, compute dtype {config.model.compute_dtype}, "
        f"{args.steps} steps, total {total_s:.1f} s"
    )
    if engine is not None and peak is not None:
        print(peak.describe())
        print("HF engine over all steps (prompt/prefill token counts in each step's row are cumulative):")
        print("\n".join(bound_report(engine.model, engine.stats, peak)))
    if stats is not None:
        print(f"{comps.generator.name} engine over all steps: {cache_line(stats)}")
    if args.set:
        print(f"overrides: {' '.join(args.set)}")
    for row in rows:
        print(json.dumps(row, sort_keys=True))
    print("\n".join(step_lines(step_times, peak_rss_gb, mean_target="  (target <= 90)", rss_target="  (target <= 6)")))


if __name__ == "__main__":
    main()
