"""Seconds and held-out accuracy of `rm_train`'s core on CPU for a few hundred scripted preference pairs.

Pairs come from the built-in demo KB: per question, a trajectory whose search query names the
question's entity beats one whose query does not (a junk query or another entity), with the same
answer in both, so only the query separates them (the hidden preference of the closed-loop test).
Target (issue #15): <= 15 minutes on a 2-core CPU for a few hundred pairs. Run from the repo root:
`python -m bench.reward_model_cpu [--pairs 300] [--epochs 3] [--train-layers 2] [--base smollm2-135m]`.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from worker.rl.data.demo_kb import build_demo_dataset
from worker.rl.reward_model.train import RewardModelConfig, train_reward_model

JUNK_QUERIES = ("your query", "search", "city", "who is it", "the answer", "born year")


def trajectory(question: str, query: str, answer: str) -> dict[str, Any]:
    return {
        "turns": [
            {"role": "user", "text": question},
            {
                "role": "assistant",
                "text": "<tool_call>",
                "tool_calls": [{"name": "search", "arguments": {"query": query}}],
            },
            {"role": "tool", "text": "passages"},
            {"role": "assistant", "text": f"<answer>{answer}</answer>", "tool_calls": []},
        ],
        "final_answer": answer,
    }


def scripted_records(pairs: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    tasks = build_demo_dataset(seed=0).train
    subjects = [str(t.metadata.get("subject", "")) for t in tasks]
    records = []
    for i in range(pairs):
        task = tasks[i % len(tasks)]
        subject = str(task.metadata.get("subject", ""))
        bad_query = rng.choice([*JUNK_QUERIES, rng.choice(subjects)])
        answer = task.answers[0] if rng.random() < 0.5 else rng.choice(tasks).answers[0]
        good, bad = trajectory(task.question, subject, answer), trajectory(task.question, bad_query, answer)
        first_good = rng.random() < 0.5
        a, b = (good, bad) if first_good else (bad, good)
        records.append(
            {
                "label_id": i + 1,
                "kind": "pairwise",
                "choice": "a" if first_good else "b",
                "trajectory": a,
                "other_trajectory": b,
                "run_id": 1,
                "step": 1,
                "group_id": f"g{i}",
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-layers", type=int, default=2)
    parser.add_argument("--base", default="smollm2-135m")
    args = parser.parse_args()
    config = RewardModelConfig(base_model=args.base, epochs=args.epochs, train_layers=args.train_layers, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = train_reward_model(scripted_records(args.pairs), config, Path(tmp) / "rm", provenance={})
        wall = time.perf_counter() - t0
    figures = {
        "pairs": args.pairs,
        "epochs": args.epochs,
        "train_layers": args.train_layers,
        "wall_s": round(wall, 1),
        "train_s": round(report.train_s, 1),
        "heldout_accuracy": report.heldout_accuracy,
        "heldout_ece": round(report.heldout_ece, 4),
        "train_accuracy": report.train_accuracy,
        "heldout_pairs": report.heldout_pairs,
        "trainable_params": report.trainable_params,
        "total_params": report.total_params,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
