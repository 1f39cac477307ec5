"""Reward models on the trajectory page and in the run curves: human label, RM score, automatic reward."""

from __future__ import annotations

from app.render.metrics import metrics_figure
from app.render.trajectory import render_judgements, render_trajectory
from backend.schemas.run import MetricPoint
from backend.schemas.trajectory import LabelPublic
from tests.app._fakes import NOW, make_trajectory


def test_judgements_put_human_label_reward_model_and_automatic_reward_side_by_side() -> None:
    label = LabelPublic(
        id=1,
        kind="score",
        trajectory_id=10,
        other_trajectory_id=None,
        score=0.0,
        choice=None,
        step_scores=[],
        note="",
        labeler="ann",
        created_at=NOW,
    )
    traj = make_trajectory(
        10, reward=1.7, labels=[label], reward_model_scores={"reward_model:3": 2.25}, automatic_reward=1.0
    )
    html = render_judgements(traj)
    assert "<th>Human label</th><th>Reward model score</th><th>Automatic reward</th>" in html
    assert "reward_model:3: 2.250" in html
    assert "<td>1.000</td>" in html  # the rubric's own total, not the 1.7 the run was rewarded with
    assert "labeled 0.00 by ann" in html
    assert render_judgements(traj) in render_trajectory(traj)
    bare = render_judgements(make_trajectory(11, reward=0.5))
    assert "not labeled yet" in bare
    assert "no reward model yet" in bare
    assert "<td>0.500</td>" in bare  # no rubric total recorded: the reward is the automatic one


def test_curves_plot_reward_model_scores_against_the_automatic_reward() -> None:
    points = [
        MetricPoint(
            step=s,
            values={
                "reward/mean": 0.1 * s,
                "reward/rubric": 0.2,
                "reward/reward_model:3": s,
                "reward/step_reward_model:4": -s,
            },
        )
        for s in (1, 2)
    ]
    fig = metrics_figure(points)
    panel = [t for t in fig.data if t.name in ("reward/rubric", "reward/reward_model:3", "reward/step_reward_model:4")]
    assert [t.name for t in panel] == ["reward/rubric", "reward/reward_model:3", "reward/step_reward_model:4"]
    assert len({(t.xaxis, t.yaxis) for t in panel}) == 1  # one panel: divergence is visible at a glance
    assert list(panel[1].y) == [1, 2]
    assert "Reward model vs automatic reward" in [a.text for a in fig.layout.annotations]
