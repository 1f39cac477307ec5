"""The tool-server pool: results, prints, errors, reward checks, concurrency, and runaway tools that cost one error.

Real sandboxed processes (bubblewrap) throughout; a module-wide pool keeps the start-up cost low.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from backend.core.config import get_settings
from worker import jobs
from worker.sandbox.bwrap import isolation_mode
from worker.sandbox.limits import SandboxLimits, SandboxUnavailable, ToolLoadError
from worker.sandbox.pool import ToolServerPool, run_tool_source
from worker.store import MemoryRunStore, ToolSpec

LIMITS = SandboxLimits(time_limit_s=2.0, memory_limit_mb=256, result_limit_bytes=256 * 1024)
ECHO = "def echo(x):\n    return x\n"


@pytest.fixture(scope="module")
def pool() -> Iterator[ToolServerPool]:
    with ToolServerPool(LIMITS, processes=2) as shared:
        shared.add_tool("echo", ECHO, "echo")
        yield shared


def test_the_sandbox_is_real_here() -> None:
    assert isolation_mode(SandboxLimits()) == "bwrap", "bubblewrap must work on test hosts (make sandbox-deps)"


def test_returns_result_and_captures_prints() -> None:
    source = "def add(a: int, b: int) -> int:\n    print('adding')\n    return a + b\n"
    result = run_tool_source(source, "add", {"a": 2, "b": 5}, LIMITS)
    assert (result.ok, result.result, result.stdout.strip()) == (True, 7, "adding")
    assert result.duration_s > 0


def test_exceptions_bad_arguments_and_load_errors_are_errors(pool: ToolServerPool) -> None:
    raised = run_tool_source("def f(x: str) -> str:\n    raise ValueError('bad ' + x)\n", "f", {"x": "in"}, LIMITS)
    assert raised.error == "ValueError: bad in"
    assert "Traceback" in raised.stderr
    assert "NameError" in run_tool_source("def f():\n    return 1\n", "g", {}, LIMITS).error
    with pytest.raises(ToolLoadError, match="SyntaxError"):
        pool.add_tool("broken", "def f(:\n", "f")
    wrong = pool.call("echo", {"y": 1})
    assert not wrong.ok
    assert "TypeError" in wrong.error
    assert "JSON" in pool.call("echo", {"x": object()}).error
    assert "named values" in pool.call("echo", [1, 2]).error  # type: ignore[arg-type]
    assert "over the 8 MiB limit" in pool.call("echo", {"x": "a" * (9 * 1024 * 1024)}).error
    assert pool.call("echo", {"x": "fine"}).result == "fine"
    with pytest.raises(KeyError, match="add it with add_tool"):
        pool.call("missing", {})


def test_non_json_results_come_back_as_repr(pool: ToolServerPool) -> None:
    pool.add_tool("setter", "def s():\n    return {1, 2}\n", "s")
    assert pool.call("setter", {}).result == "{1, 2}"


def test_reward_functions_must_return_finite_numbers(pool: ToolServerPool) -> None:
    pool.add_function(
        "reward",
        "def reward(answer: str, gold: list) -> object:\n"
        "    return {'half': 0.5, 'yes': True, 'nan': float('nan'), 'text': 'x'}[answer]\n",
        "reward",
    )
    half, yes, nan, text = pool.call_many("reward", [{"answer": a, "gold": []} for a in ("half", "yes", "nan", "text")])
    assert (half.ok, half.result, yes.result) == (True, 0.5, 1.0)
    assert not nan.ok
    assert "finite" in nan.error
    assert not text.ok
    assert "must return a float" in text.error
    assert pool.stats("reward").errors == 2


def test_concurrent_calls_spread_over_processes(pool: ToolServerPool) -> None:
    results: list[object] = []

    def worker(base: int) -> None:
        results.extend(pool.call("echo", {"x": base + i}).result for i in range(25))

    threads = [threading.Thread(target=worker, args=(100 * t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(100 * t + i for t in range(8) for i in range(25))  # type: ignore[type-var]


def test_endless_loop_costs_one_time_limit_error(pool: ToolServerPool) -> None:
    pool.add_tool("spin", "def spin():\n    while True:\n        pass\n", "spin")
    result = pool.call("spin", {})
    assert not result.ok
    assert "time limit exceeded" in result.error
    assert 2.0 <= result.duration_s < 6
    assert pool.stats("spin").timeouts == 1
    assert pool.call("echo", {"x": "still serving"}).result == "still serving"


def test_ten_megabyte_result_is_truncated_with_a_marker(pool: ToolServerPool) -> None:
    pool.add_tool("big", "def big() -> str:\n    return 'a' * (10 * 1024 * 1024)\n", "big")
    result = pool.call("big", {})
    assert result.ok
    assert result.truncated
    assert result.result.endswith(f"...[truncated: {10 * 1024 * 1024 - 256 * 1024} bytes over the 256 KiB limit]")
    assert len(result.result) < 256 * 1024 + 100
    assert pool.stats("big").truncated == 1


def test_endless_printing_costs_one_error_and_prints_are_capped(pool: ToolServerPool) -> None:
    pool.add_tool("chatty", "def chatty():\n    while True:\n        print('spam' * 100)\n", "chatty")
    result = pool.call("chatty", {})
    assert not result.ok
    assert len(result.stdout) < LIMITS.stdout_limit_bytes + 200
    assert "truncated" in result.stdout
    pool.add_tool("loud", "def loud():\n    import os\n    os.write(1, b'x' * 200_000)\n    return 'done'\n", "loud")
    loud = pool.call("loud", {})
    assert loud.result == "done"
    assert "bytes over the limit" in loud.stdout
    assert pool.call("echo", {"x": 1}).result == 1


def test_memory_hog_and_crash_restart_transparently(pool: ToolServerPool) -> None:
    pool.add_tool("hog", "def hog():\n    block = bytearray(2 * 1024 ** 3)\n    return len(block)\n", "hog")
    hog = pool.call("hog", {})
    assert not hog.ok
    assert "memory" in hog.error.lower()
    pool.add_tool("crash", "calls = []\ndef crash():\n    calls.append(1)\n    import os\n    os._exit(9)\n", "crash")
    crash = pool.call("crash", {})
    assert not crash.ok
    assert "exit code 9" in crash.error
    assert "exit code 9" in pool.call("crash", {}).error  # a fresh server answered (and crashed again)
    assert pool.stats("crash").restarts >= 1
    assert pool.call("echo", {"x": 2}).result == 2


def test_refuses_without_bubblewrap_unless_accepted(caplog: pytest.LogCaptureFixture) -> None:
    missing = SandboxLimits(bwrap_path="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        ToolServerPool(missing)
    with pytest.raises(SandboxUnavailable, match="STUDIO_ALLOW_UNSANDBOXED_CODE"):
        run_tool_source(ECHO, "echo", {"x": 1}, missing)
    accepted = SandboxLimits(bwrap_path="/nonexistent/bwrap", allow_unsandboxed=True)
    with caplog.at_level(logging.WARNING, logger="worker.sandbox.bwrap"):
        result = run_tool_source(ECHO, "echo", {"x": 1}, accepted)
    assert result.result == 1
    assert "WITHOUT isolation" in caplog.text


def test_tool_test_job_refuses_without_isolation_and_settings_reach_the_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryRunStore()
    store.tools[1] = ToolSpec(1, "echo", "python", ECHO, {}, {"name": "echo"}, 1)
    run_id = store.add_run("tool_test", config={"tool_id": 1, "arguments": {"x": 1}})
    monkeypatch.setenv("STUDIO_BWRAP_PATH", "/nonexistent/bwrap")
    limits = SandboxLimits.from_settings(get_settings())
    assert (limits.bwrap_path, limits.allow_unsandboxed) == ("/nonexistent/bwrap", False)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        jobs.tool_test_job(run_id, store, hostname="w", limits=limits)
    monkeypatch.setenv("STUDIO_ALLOW_UNSANDBOXED_CODE", "1")
    assert SandboxLimits.from_settings(get_settings()).allow_unsandboxed


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="time_limit_s"):
        SandboxLimits(time_limit_s=0)
    with pytest.raises(ValueError, match="memory_limit_mb"):
        SandboxLimits(memory_limit_mb=8)
    with pytest.raises(ValueError, match="max_processes"):
        SandboxLimits(max_processes=1)
    with pytest.raises(ValueError, match="processes must be"):
        ToolServerPool(LIMITS, processes=-1)


def test_close_stops_calls_in_flight_and_leaves_no_process() -> None:
    pool = ToolServerPool(SandboxLimits(time_limit_s=30), processes=1)
    pool.add_tool("spin", "def spin():\n    while True:\n        pass\n", "spin")
    results = []
    caller = threading.Thread(target=lambda: results.append(pool.call("spin", {})))
    caller.start()
    time.sleep(0.5)
    started = time.monotonic()
    pool.close()
    caller.join(timeout=10)
    assert time.monotonic() - started < 5  # not the 30 s call limit
    assert not results[0].ok
    with pytest.raises(RuntimeError, match="closed"):
        pool.call("spin", {})
    pool.close()  # idempotent


def test_server_near_its_cpu_budget_is_recycled_between_calls() -> None:
    # A 1 s CPU budget cannot cover a worst-case 10 s call: each server serves one call, then is replaced
    # before RLIMIT_CPU could kill it mid-call.
    with ToolServerPool(SandboxLimits(time_limit_s=10, cpu_time_limit_s=1), processes=1) as pool:
        pool.add_tool("echo", ECHO, "echo")
        assert [pool.call("echo", {"x": i}).result for i in range(3)] == [0, 1, 2]
        assert pool.stats("echo").restarts == 3
    with ToolServerPool(SandboxLimits(time_limit_s=10), processes=1) as pool:
        pool.add_tool("echo", ECHO, "echo")
        assert [pool.call("echo", {"x": i}).result for i in range(3)] == [0, 1, 2]
        assert pool.stats("echo").restarts == 0
