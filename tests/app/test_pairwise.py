"""Label tab, pairwise mode and reward-model panel handlers over the fake client; the blind pair view."""

from __future__ import annotations

from app.render.compare import render_pair
from app.tabs import labeling, pairwise
from tests.app._fakes import FakeStudioClient


def test_pair_view_is_blind_and_numbers_steps(fake: FakeStudioClient) -> None:
    html = render_pair(fake.trajectories[10], fake.trajectories[11])
    assert 'data-side="A"' in html
    assert 'data-side="B"' in html
    assert "step 0" in html
    assert "reward 1.000" not in html  # rewards are hidden so they don't sway the labeler


def test_pairwise_choose_posts_and_advances(fake: FakeStudioClient) -> None:
    session, progress, view = pairwise.load_pairs(fake, 1)
    assert session.current == (10, 11, "mixed rewards")
    assert "why this pair: mixed rewards" in view
    assert "κ 0.50 on 2 shared item(s)" in progress
    session, progress, view, note = pairwise.choose(fake, "b", session, "B searched", " ann ")
    tid, label = fake.labels[0]
    assert (tid, label.kind, label.other_trajectory_id, label.choice, label.labeler) == (10, "pairwise", 11, "b", "ann")
    assert note == ""
    assert session.current is None
    assert "No unlabeled pairs left" in view
    assert "**1 pairs** this session" in progress


def test_pairwise_errors_are_shown(fake: FakeStudioClient) -> None:
    session, progress, _ = pairwise.load_pairs(fake, None)
    assert "enter the id of a run" in progress
    out = pairwise.choose(fake, "a", session, "", "")
    assert "load a pair queue first" in out[1]
    fake.fail = "API down"
    assert "API down" in pairwise.load_pairs(fake, 1)[1]


def test_train_reward_model_from_the_label_tab(fake: FakeStudioClient) -> None:
    table, status = pairwise.train_reward_model(fake, "1, 2", "", 2)
    assert "Reward model #100 queued" in status
    request = fake.calls[0][1]
    assert (request.label_run_ids, request.base_model, request.config) == ([1, 2], "smollm2-135m", {"epochs": 2})
    assert table[0][:4] == [100, "rm", "queued", "smollm2-135m"]
    _, status = pairwise.train_reward_model(fake, "one", "", 2)
    assert "run ids must be whole numbers" in status
    table, _ = pairwise.train_reward_model(fake, "1", "", 1, "step")
    assert fake.calls[-2][1].kind == "step"
    assert table[0][-1] == "step_reward_model:101"  # how to use it, on the newest row


def test_step_marks_parse_and_reject() -> None:
    marks = labeling.parse_step_marks("+ . -")
    assert [(m.turn, m.good) for m in marks] == [(0, True), (2, False)]
    session = labeling.LabelSession(run_id=1, queue=[10])
    out = labeling.submit_label(FakeStudioClient(), session, 1.0, "", "", "", "+x")
    assert "step marks are one of" in out[1]
