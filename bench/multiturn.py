"""The reference step's rollout phase with the HF engine's full re-prefill and its prefix sharing, side by side.

Called by `python -m bench.rollout_throughput --rollout`. Both paths serve the same weights, tasks and seeds,
interleaved (the order flips every repeat) so that load from other processes on a shared CPU hits both alike.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.grpo_step import reference_overrides
from bench.hostperf import HostPeak, bound_report
from worker.rl.generation.base import SamplingParams
from worker.rl.generation.hf import HFGenerator
from worker.rl.rollout import collect_trajectories
from worker.rl.training.build import build_components, with_resolved_precision
from worker.rl.training.collect import rollout_limits
from worker.rl.training.config import load_config, override

REPO = Path(__file__).resolve().parents[1]
PATHS = {False: "full re-prefill", True: "prefix-shared"}


def run_rollout_comparison(*, repeats: int, overrides: list[str]) -> None:
    config = override(load_config(REPO / "configs" / "multihop_cpu.toml"), reference_overrides(1, "hf") + overrides)
    config = with_resolved_precision(config)
    comps = build_components(config)
    if not isinstance(comps.generator, HFGenerator):
        raise SystemExit("--rollout times the HF engine; the config resolved another engine")
    served = comps.generator.model
    r = config.rollout
    tasks = comps.train_tasks[: r.prompts_per_step]
    params = SamplingParams(max_new_tokens=r.max_new_tokens_per_turn, temperature=r.temperature, top_p=r.top_p, seed=0)
    peak = HostPeak.measure(next(served.parameters()).dtype)
    print(
        f"reference rollout: {len(tasks)} prompts x {r.group_size} samples, <= {r.max_turns} turns, "
        f"<= {r.max_new_tokens_per_turn} tokens a turn, compute dtype {config.model.compute_dtype}; "
        f"overrides: {' '.join(overrides) or 'none'}"
    )
    print(peak.describe())
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(repeats):
        ids: dict[bool, list[tuple[int, ...]]] = {}
        for share in (False, True) if rep % 2 == 0 else (True, False):
            engine = HFGenerator(
                served, comps.tokenizer, max_batch_size=config.engine.max_batch_size, prefix_cache=share
            )
            started = time.perf_counter()
            batch = collect_trajectories(
                comps.env_factory,
                engine,
                comps.chat,
                tasks,
                group_size=r.group_size,
                params=params,
                limits=rollout_limits(config),
                seed=rep,
            )
            took = time.perf_counter() - started
            seconds[share].append(took)
            ids[share] = [t.token_ids for t in batch.trajectories]
            sampled = sum(t.response_length for t in batch.trajectories)
            turns = sum(t.num_turns for t in batch.trajectories) / len(batch.trajectories)
            print(f"repeat {rep} {PATHS[share]:<16} {took:7.1f} s, {sampled} sampled tokens, mean turns {turns:.2f}")
            print("\n".join(bound_report(served, engine.stats, peak)))
            engine.release()
        same = sum(a == b for a, b in zip(ids[False], ids[True], strict=True))
        print(f"repeat {rep}: {same}/{len(ids[False])} trajectories token-identical between the two paths")
    old, new = sum(seconds[False]), sum(seconds[True])
    print(
        f"rollout seconds, full re-prefill: {', '.join(f'{s:.1f}' for s in seconds[False])}; "
        f"prefix-shared: {', '.join(f'{s:.1f}' for s in seconds[True])}; speed-up {old / new:.2f}x (target >= 3x)"
    )
    print(f"after the runs, {HostPeak.measure(next(served.parameters()).dtype).describe()}")
