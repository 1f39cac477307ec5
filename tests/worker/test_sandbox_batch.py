"""`ToolServerPool.call_batch`: many reward calls in one request to a real sandboxed server, each item under
the per-call time limit, failures per item, and a reward term through the worker's pool in one round trip."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from worker.sandbox.limits import SandboxLimits
from worker.sandbox.pool import ToolServerPool

LIMITS = SandboxLimits(time_limit_s=1.0, memory_limit_mb=256)
REWARD = """
import time

def reward(x):
    if x == "raise":
        raise ValueError("bad item")
    if x == "slow":
        time.sleep(30)
    if x == "text":
        return "not a number"
    return float(len(x))
"""


@pytest.fixture(scope="module")
def pool() -> Iterator[ToolServerPool]:
    with ToolServerPool(LIMITS, processes=1) as shared:
        shared.add_function("r", REWARD, "reward")
        yield shared


def test_batch_results_in_order_with_per_item_failures(pool: ToolServerPool) -> None:
    before = pool.stats("r")
    start = time.monotonic()
    out = pool.call_batch("r", [{"x": "ab"}, {"x": "raise"}, {"x": "slow"}, {"x": "text"}, {"y": 1}, {"x": "abcd"}])
    took = time.monotonic() - start
    assert [r.ok for r in out] == [True, False, False, False, False, True]
    assert (out[0].result, out[5].result) == (2.0, 4.0)
    assert out[1].error == "ValueError: bad item"
    assert "time limit exceeded" in str(out[2].error)  # the slow item alone, stopped at its own limit
    assert "must return a float" in str(out[3].error)
    assert "TypeError" in str(out[4].error)
    assert took < 10, took  # one item's limit, not the sleep
    after = pool.stats("r")
    assert (after.calls - before.calls, after.errors - before.errors, after.restarts - before.restarts) == (6, 4, 0)


def test_bad_items_fail_alone_and_an_empty_batch_is_empty(pool: ToolServerPool) -> None:
    out = pool.call_batch("r", [{"x": object()}, [1], {"x": "a"}])  # type: ignore[list-item]
    assert "JSON" in str(out[0].error)
    assert "named values" in str(out[1].error)
    assert out[2].result == 1.0
    assert pool.call_batch("r", []) == []


def test_code_that_swallows_the_alarm_is_stopped_by_the_batch_deadline() -> None:
    source = (
        "def reward(x):\n    while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass\n"
    )
    with ToolServerPool(LIMITS, processes=1) as own:
        own.add_function("spin", source, "reward")
        start = time.monotonic()
        out = own.call_batch("spin", [{"x": 1}, {"x": 2}])
        took = time.monotonic() - start
        assert all(not r.ok and "time limit exceeded" in str(r.error) for r in out)
        assert "2 s" in str(out[0].error)  # the whole request's limit: items x the per-call limit
        assert took < 15, took
        assert own.stats("spin").timeouts == 1
        again = own.call_batch("spin", [{"x": 3}])  # a fresh server took the killed one's place
        assert not again[0].ok


def test_a_user_reward_term_is_one_request_per_rollout_through_the_pool() -> None:
    """The worker's pool as the env's tool runner: the trajectory-level term's batch goes out as one request."""
    from worker.rl.envs.from_spec import env_factory
    from worker.rl.envs.spec import EnvSpec
    from worker.rl.types import Task, Trajectory

    source = "def reward(answer, gold, trajectory):\n    return float(answer in gold)\n"
    spec = EnvSpec.from_dict({"name": "e", "rubric": [{"name": "mine", "key": "reward-1", "source": source}]})
    requests: list[Any] = []
    with ToolServerPool(LIMITS, processes=1) as own:
        own.add_function("reward-1", source, "reward")
        original = own._in_slot

        def counted(entry: Any, payload: dict[str, Any], timeout_s: float, start: float) -> Any:
            requests.append(payload["op"])
            return original(entry, payload, timeout_s, start)

        own._in_slot = counted  # type: ignore[method-assign]
        env = env_factory(spec, tool_runner=own)()
        trajs = [Trajectory(f"t{i}", "g", (), (), (), 0, (), final_answer=a) for i, a in enumerate(["1", "2", "1"])]
        results = env.score_batch(trajs, [Task(id=f"t{i}", question="q", answers=("1",)) for i in range(3)])
    assert requests == ["call_batch"]
    assert [r.breakdown["mine"] for r in results] == [1.0, 0.0, 1.0]
