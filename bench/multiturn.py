"""The reference step's rollout phase through three HF engine paths, side by side.

Called by `python -m bench.rollout_throughput --rollout`. The paths: full re-prefill with plain linear layers
(the engine before issue #13), prefix sharing with plain linear layers, and prefix sharing with packed linear
layers (the default). They serve the same weights, tasks and seeds, interleaved (the order rotates every
repeat) so that load from other processes on a shared CPU hits all alike.
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
PATHS = {  # name: (prefix_cache, packed_linear); the first is the baseline every speed-up is against
    "full re-prefill": (False, False),
    "prefix-shared": (True, False),
    "prefix-shared+packed": (True, True),
}


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
    names = list(PATHS)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        ids: dict[str, list[tuple[int, ...]]] = {}
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            share, packed = PATHS[name]
            engine = HFGenerator(
                served,
                comps.tokenizer,
                max_batch_size=config.engine.max_batch_size,
                prefix_cache=share,
                packed_linear=packed,
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
            seconds[name].append(took)
            ids[name] = [t.token_ids for t in batch.trajectories]
            sampled = sum(t.response_length for t in batch.trajectories)
            turns = sum(t.num_turns for t in batch.trajectories) / len(batch.trajectories)
            packing = "packed" if engine.packed is not None else "unpacked"
            print(
                f"repeat {rep} {name:<21} {took:7.1f} s ({packing}), {sampled} sampled tokens, mean turns {turns:.2f}"
            )
            print("\n".join(bound_report(served, engine.stats, peak)))
            engine.release()
        for name in names[1:]:
            same = sum(a == b for a, b in zip(ids[names[0]], ids[name], strict=True))
            print(f"repeat {rep}: {same}/{len(ids[name])} trajectories token-identical, {names[0]} vs {name}")
    base = sum(seconds[names[0]])
    for name in names:
        took = ", ".join(f"{s:.1f}" for s in seconds[name])
        print(f"rollout seconds, {name}: {took}; speed-up {base / sum(seconds[name]):.2f}x (target >= 3x)")
    print(f"after the runs, {HostPeak.measure(next(served.parameters()).dtype).describe()}")
