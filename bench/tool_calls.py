"""Benchmark: sandboxed user-tool calls per second through `ToolServerPool` (real bubblewrap servers).

Two tools, each called from `--concurrency` threads over `--processes` servers for `--seconds`:
a trivial one (`echo`), and a search tool written as user code that does what the built-in
`BM25Retriever` does (bm25s, English stopwords, the same stemmer) over the passages of the
HotpotQA dev sample in ../shared/data. Also times the one-shot path (a fresh sandbox per call), and
a user reward function scoring a step's batch of episodes one call each vs in one `call_batch` request.
Target (issue #16): >= 200 trivial calls/s on 2 cores.
Usage: python -m bench.tool_calls [--seconds 5] [--processes N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from worker.sandbox.limits import SandboxLimits
from worker.sandbox.pool import ToolServerPool, available_cores, run_tool_source

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hotpotqa" / "dev_sample.json"
ECHO = "def echo(x: int) -> int:\n    return x\n"
SEARCH_TEMPLATE = """
import json
import bm25s
try:
    import Stemmer
    STEMMER = Stemmer.Stemmer("english")
except ImportError:
    STEMMER = None
PASSAGES = json.loads(CORPUS)
INDEX = bm25s.BM25()
INDEX.index(bm25s.tokenize([f"{t} {x}" for t, x in PASSAGES], stopwords="en", stemmer=STEMMER,
                           show_progress=False), show_progress=False)

def search(query: str, top_k: int = 3) -> str:
    tokens = bm25s.tokenize([query], stopwords="en", stemmer=STEMMER, return_ids=False, show_progress=False)
    known = [t for t in tokens[0] if t in INDEX.vocab_dict]
    if not known:
        return "No results."
    docs, scores = INDEX.retrieve([known], k=min(top_k, len(PASSAGES)), show_progress=False, n_threads=1)
    hits = [PASSAGES[int(d)] for d, s in zip(docs[0], scores[0]) if s > 0]
    return "\\n".join(f"[{i + 1}] {title}: {text}" for i, (title, text) in enumerate(hits)) or "No results."
"""


def cpu_description() -> str:
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = sorted({f for f in ("avx2", "avx512_bf16", "amx_bf16") if re.search(rf"\b{f}\b", text)})
    found = " ".join(flags) or "none of avx2/avx512_bf16/amx_bf16"
    return f"{model.group(1) if model else 'unknown CPU'}; flags: {found}"


def corpus() -> tuple[list[tuple[str, str]], list[str]]:
    """(title, text) passages of the HotpotQA dev sample's contexts, deduplicated, and its questions."""
    records = json.loads(DATA.read_text(encoding="utf-8"))
    seen: dict[tuple[str, str], None] = {}
    for record in records:
        for title, sentences in record["context"]:
            seen.setdefault((title, "".join(sentences)), None)
    return list(seen), [r["question"] for r in records]


def measure(
    pool: ToolServerPool, key: str, arguments: list[dict[str, object]], seconds: float, concurrency: int
) -> dict[str, float]:
    """Calls/s and latency percentiles of `concurrency` threads calling `key` for `seconds`."""
    for result in pool.call_many(key, arguments[:concurrency]):  # start every server before timing
        if not result.ok:
            raise RuntimeError(f"{key} failed while warming up: {result.error}")
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def caller(offset: int) -> None:
        i = offset
        while time.monotonic() < stop:
            result = pool.call(key, arguments[i % len(arguments)])
            with lock:
                latencies.append(result.duration_s)
                errors[0] += int(not result.ok)
            i += concurrency

    start = time.monotonic()
    threads = [threading.Thread(target=caller, args=(t,)) for t in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    ordered = sorted(latencies)
    p95_ms = 1000 * ordered[int(0.95 * (len(ordered) - 1))]
    return {
        "calls": len(latencies),
        "calls_per_s": len(latencies) / elapsed,
        "errors": errors[0],
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": p95_ms,
    }


REWARD = "def reward(answer, gold, trajectory):\n    return float(answer in gold) + 0.01 * len(trajectory['turns'])\n"


def measure_reward_batches(pool: ToolServerPool, batch_size: int, seconds: float) -> tuple[float, float]:
    """Scored episodes/s of a reward function over batches of `batch_size`: (one call each, one call_batch)."""
    turns = [{"role": r, "text": "x" * 200, "name": None, "tool_error": False} for r in ("user", "assistant") * 3]
    items = [
        {"answer": str(i % 7), "gold": ["3"], "trajectory": {"turns": turns, "num_tool_calls": 2}}
        for i in range(batch_size)
    ]
    rates = []
    for batched in (False, True):
        done, stop = 0, time.monotonic() + seconds
        start = time.monotonic()
        while time.monotonic() < stop:
            out = pool.call_batch("reward", items) if batched else pool.call_many("reward", items)
            if not all(r.ok for r in out):
                raise RuntimeError(f"the reward function failed: {next(r.error for r in out if not r.ok)}")
            done += len(out)
        rates.append(done / (time.monotonic() - start))
    return rates[0], rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=available_cores())
    parser.add_argument("--concurrency", type=int, default=available_cores())
    args = parser.parse_args()
    passages, questions = corpus()
    limits = SandboxLimits(time_limit_s=10.0)
    print(f"CPU: {cpu_description()}; cores available: {available_cores()}")
    with ToolServerPool(limits, processes=args.processes) as pool:
        print(f"sandbox: {pool.mode}; {args.processes} server(s) per tool; {args.concurrency} calling threads")
        pool.add_tool("echo", ECHO, "echo")
        trivial = measure(pool, "echo", [{"x": i} for i in range(1000)], args.seconds, args.concurrency)
        print(
            "trivial tool (echo):     {calls_per_s:8.1f} calls/s  p50 {p50_ms:.2f} ms  p95 {p95_ms:.2f} ms  "
            "({calls:.0f} calls, {errors:.0f} errors)".format(**trivial)
        )
        started = time.monotonic()
        pool.add_tool("search", f"CORPUS = {json.dumps(passages)!r}\n{SEARCH_TEMPLATE}", "search")
        print(
            f"search tool: BM25 (bm25s) over {len(passages)} HotpotQA passages; server load and index "
            f"{time.monotonic() - started:.2f} s"
        )
        search = measure(pool, "search", [{"query": q} for q in questions], args.seconds, args.concurrency)
        print(
            "search tool (BM25):      {calls_per_s:8.1f} calls/s  p50 {p50_ms:.2f} ms  p95 {p95_ms:.2f} ms  "
            "({calls:.0f} calls, {errors:.0f} errors)".format(**search)
        )
        pool.add_function("reward", REWARD, "reward")
        for size in (16, 64):
            each, batch = measure_reward_batches(pool, size, args.seconds)
            print(
                f"reward function, batches of {size:2d}: {each:8.1f} episodes/s one call each, {batch:8.1f} "
                f"episodes/s in one call_batch ({batch / each:.1f}x)"
            )
    started = time.monotonic()
    for i in range(5):
        run_tool_source(ECHO, "echo", {"x": i}, limits)
    print(f"one-shot sandbox per call (run_tool_source): {(time.monotonic() - started) / 5 * 1000:.0f} ms per call")


if __name__ == "__main__":
    main()
