"""The Gradio studio: `build_app(client)` assembles one tab per `app.tabs` module; `main()` launches it.

Run with `python -m app.main` (the `studio up` launcher does). Every tab talks
to the API through the one `StudioClient`; cross-tab jumps are wired here.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import gradio as gr

from app.client import StudioClient
from app.guard import middleware_kwargs
from app.session import RequestClient, SessionTokens, make_login
from app.settings import UISettings
from app.tabs.environments import build_environments_tab, refresh_choices, reward_model_choices
from app.tabs.evaluate import build_evaluate_tab, load_history
from app.tabs.evaluate_compare import build_compare_section, refresh_compare
from app.tabs.home import build_home_tab, refresh_home
from app.tabs.labeling import KEYBOARD_JS, build_labeling_tab
from app.tabs.runs import RunsTab, build_runs_tab, refresh_runs
from app.tabs.tools import build_tools_tab, refresh_tools
from app.tabs.train import build_train_tab, environment_choices
from app.tabs.trajectories import TrajectoriesTab, build_trajectories_tab, first_trajectory_id, search_trajectories

logger = logging.getLogger(__name__)

TITLE = "Agent Studio"
QUEUE_MAX_SIZE = 256
CONCURRENCY_LIMIT = 16
"""Events handled at once; handlers only wait on HTTP, so more than the CPU count is fine."""


def launch_options() -> dict[str, Any]:
    """Keyword arguments every launch passes (Gradio 6 takes head/js/css at launch time)."""
    return {"head": KEYBOARD_JS}


def jump_to_step(run_id: Any, step: Any) -> tuple[Any, Any, Any]:
    """Runs tab → Trajectories tab filtered by the run and step."""
    return run_id, step, gr.Tabs(selected="trajectories")


def show_launched_run(run_id: Any) -> tuple[Any, Any]:
    """Train tab → Runs tab watching the run just launched."""
    if run_id is None:
        return gr.skip(), gr.skip()
    return run_id, gr.Tabs(selected="runs")


def replay_trajectory(trajectory_id: Any) -> tuple[Any, Any]:
    """Evaluate tab's comparison → Trajectories tab replaying the picked trajectory."""
    if not trajectory_id:
        gr.Warning("Trajectory id: click a trajectory id in the side-by-side table first")
        return gr.skip(), gr.skip()
    return int(trajectory_id), gr.Tabs(selected="trajectories")


def _wire_jumps(tabs: gr.Tabs, runs: RunsTab, trajs: TrajectoriesTab, client: StudioClient) -> None:
    runs.jump.click(
        jump_to_step, [runs.run_id, runs.jump_step], [trajs.run_id, trajs.step, tabs], api_visibility="private"
    ).then(
        functools.partial(search_trajectories, client),
        trajs.filters,
        [trajs.table, trajs.info],
        api_visibility="private",
    ).then(first_trajectory_id, [trajs.table], [trajs.trajectory_id], api_visibility="private")


def build_app(client: StudioClient, *, poll_interval_s: float = 2.0) -> gr.Blocks:
    """The whole studio UI over `client` (tests pass a fake one)."""
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"# {TITLE}\nTrain tool-using LLM agents with multi-turn reinforcement learning.")
        with gr.Tabs() as tabs:
            with gr.Tab("Home", id="home"):
                home = build_home_tab(client)
            with gr.Tab("Tools", id="tools"):
                tools = build_tools_tab(client, poll_interval_s=min(poll_interval_s, 1.0))
            with gr.Tab("Environments", id="environments"):
                envs = build_environments_tab(client, poll_interval_s=min(poll_interval_s, 1.0))
            with gr.Tab("Train", id="train"):
                train = build_train_tab(client)
            with gr.Tab("Runs", id="runs"):
                runs = build_runs_tab(client, poll_interval_s=poll_interval_s)
            with gr.Tab("Trajectories", id="trajectories"):
                trajs = build_trajectories_tab(client)
            with gr.Tab("Label", id="label"):
                build_labeling_tab(client)
            with gr.Tab("Evaluate", id="evaluate"):
                evaluate = build_evaluate_tab(client, poll_interval_s=poll_interval_s)
                compare = build_compare_section(client, poll_interval_s=poll_interval_s)
        _wire_jumps(tabs, runs, trajs, client)
        compare.replay.click(
            replay_trajectory, [compare.trajectory_id], [trajs.trajectory_id, tabs], api_visibility="private"
        )
        train.launched_run.change(
            show_launched_run, [train.launched_run], [runs.run_id, tabs], api_visibility="private"
        ).then(
            functools.partial(refresh_runs, client),
            [runs.status_filter, runs.kind_filter],
            [runs.table, runs.hint],
            api_visibility="private",
        )
        demo.load(functools.partial(refresh_home, client), None, [home.health, home.guide], api_visibility="private")
        demo.load(
            functools.partial(refresh_tools, client), None, [tools.picker, tools.status], api_visibility="private"
        )
        demo.load(functools.partial(environment_choices, client), None, [train.environment], api_visibility="private")
        demo.load(
            functools.partial(refresh_choices, client),
            None,
            [envs.picker, envs.tools, envs.dataset, envs.corpus, envs.status],
            api_visibility="private",
        )
        demo.load(functools.partial(reward_model_choices, client), None, [envs.reward_models], api_visibility="private")
        demo.load(
            functools.partial(refresh_runs, client),
            [runs.status_filter, runs.kind_filter],
            [runs.table, runs.hint],
            api_visibility="private",
        )
        demo.load(
            functools.partial(load_history, client),
            None,
            [evaluate.source_run, evaluate.table, evaluate.plot, evaluate.card],
            api_visibility="private",
        )
        demo.load(
            functools.partial(refresh_compare, client),
            None,
            [compare.checkpoints, compare.past],
            api_visibility="private",
        )
    return demo


def secured_launch_options(settings: UISettings, tokens: SessionTokens) -> dict[str, Any]:
    """Sign-in (when required) and the Host/CSRF guard, for `Blocks.launch`."""
    require_login = settings.login_required
    options: dict[str, Any] = {
        "app_kwargs": middleware_kwargs(
            tokens, require_login=require_login, allowed_hosts=settings.extra_allowed_hosts
        ),
    }
    if require_login:
        options["auth"] = make_login(settings.resolved_api_url, timeout_s=settings.request_timeout_s)
        options["auth_message"] = "Sign in with your Agent Studio name and password, or your name and API token."
    return options


def build_secured_app(settings: UISettings, *, transport: Any = None) -> tuple[gr.Blocks, dict[str, Any]]:
    """The studio over a per-session client, and the launch options that guard it."""
    tokens = SessionTokens()
    client = RequestClient(
        settings.resolved_api_url,
        tokens=tokens,
        require_login=settings.login_required,
        timeout_s=settings.request_timeout_s,
        transport=transport,
    )
    demo = build_app(client, poll_interval_s=settings.poll_interval_s)  # type: ignore[arg-type]
    return demo, {**launch_options(), **secured_launch_options(settings, tokens)}


def main() -> None:
    """Read `STUDIO_*` settings, build the app over the API and serve it (with sign-in when required)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = UISettings()
    demo, options = build_secured_app(settings)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=CONCURRENCY_LIMIT)
    logger.info(
        "UI on http://%s:%s talking to %s (sign-in %s)",
        settings.ui_host,
        settings.ui_port,
        settings.resolved_api_url,
        "required" if settings.login_required else "off: loopback only",
    )
    demo.launch(server_name=settings.ui_host, server_port=settings.ui_port, footer_links=["api"], **options)


if __name__ == "__main__":
    main()
