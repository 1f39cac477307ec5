"""App test fixtures: a `FakeStudioClient` preloaded with one run, its metrics and a 2-member group."""

from __future__ import annotations

import pytest

from backend.schemas.run import MetricPoint
from tests.app._fakes import FakeStudioClient, make_run, make_trajectory


@pytest.fixture
def fake() -> FakeStudioClient:
    """A fake API holding one running train run with two metric points and a 2-member group."""
    client = FakeStudioClient()
    client.runs[1] = make_run(1)
    client.metrics[1] = [
        MetricPoint(step=1, values={"reward/mean": 0.1, "loss/kl": 0.0}),
        MetricPoint(step=2, values={"reward/mean": 0.3, "loss/kl": 0.01}),
    ]
    client.trajectories[10] = make_trajectory(10, reward=1.0, siblings=[11])
    client.trajectories[11] = make_trajectory(11, reward=0.0, siblings=[10])
    return client
