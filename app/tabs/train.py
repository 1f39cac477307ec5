"""Train tab: pick a preset, model and environment, adjust the key hyperparameters, launch.

Only values that differ from the preset are sent as overrides (`RunCreate.config`),
so the stored run says exactly what was changed. A summary states what will run where.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.tabs.common import error_markdown, parse_json_object
from backend.schemas.run import RunCreate, RunPublic
from worker.rl import vocab  # stdlib-only value lists and the preset registry (shared with config and API)
from worker.rl.training.config import TrainConfig  # torch-free: the form's defaults are the config's
from worker.rl.training.presets import preset_data

ESTIMATORS = list(vocab.ESTIMATORS)
GAE_VF_COEF = 0.5
"""Value-loss weight sent with estimator 'gae' (PPO) when the advanced overrides don't set one."""
FIELDS: tuple[tuple[str, str], ...] = (
    ("model", "name_or_path"),
    ("rollout", "group_size"),
    ("rollout", "prompts_per_step"),
    ("optim", "lr"),
    ("algorithm", "kl_coef"),
    ("algorithm", "estimator"),
    ("rollout", "max_turns"),
    ("optim", "total_steps"),
)
"""(section, key) of each form field, in the order of the form's inputs."""
_DEFAULTS = TrainConfig().to_dict()
FALLBACK: dict[str, Any] = {f"{section}.{key}": _DEFAULTS[section][key] for section, key in FIELDS}
"""Form values where the preset file is silent: `TrainConfig`'s own defaults (one set of defaults)."""


@dataclass(frozen=True)
class TrainTab:
    """Component handles of the Train tab."""

    name: gr.Textbox
    preset: gr.Radio
    environment: gr.Dropdown
    fields: tuple[Any, ...]
    """Model, group size, prompts/step, lr, KL, estimator, max turns, steps (the order of `FIELDS`)."""
    advanced: gr.Code
    summary: gr.Markdown
    launch: gr.Button
    status: gr.Markdown
    launched_run: gr.Number


def preset_values(preset: str) -> dict[str, Any]:
    """The preset's values of the form fields (`section.key` → value), read from `configs/`."""
    values = dict(FALLBACK)
    data = preset_data(preset) if preset in vocab.PRESETS else {}
    for section, key in FIELDS:
        if key in data.get(section, {}):
            values[f"{section}.{key}"] = data[section][key]
    return values


def fill_from_preset(preset: str) -> list[Any]:
    """Form values when the preset changes."""
    values = preset_values(preset)
    return [values[f"{s}.{k}"] for s, k in FIELDS]


def build_overrides(preset: str, field_values: list[Any], advanced_json: str) -> dict[str, Any]:
    """Fields that differ from the preset as nested sections, then the advanced JSON on top."""
    base = preset_values(preset)
    out: dict[str, dict[str, Any]] = {}
    for (section, key), value in zip(FIELDS, field_values, strict=True):
        if isinstance(base[f"{section}.{key}"], int) and isinstance(value, float) and value.is_integer():
            value = int(value)
        if value != base[f"{section}.{key}"]:
            out.setdefault(section, {})[key] = value
    algorithm = out.get("algorithm", {})
    if algorithm.get("estimator") == "gae":  # PPO trains a critic: give its loss a weight unless the user set one
        algorithm.setdefault("vf_coef", GAE_VF_COEF)
    for section, body in parse_json_object(advanced_json, "advanced overrides").items():
        if isinstance(body, dict):
            out.setdefault(section, {}).update(body)
        else:
            out[section] = body  # type: ignore[assignment]
    return out


def summarize_launch(preset: str, environment_id: int | None, *values: Any) -> str:
    """What will run and where, in plain words (updates live as the form changes)."""
    *field_values, advanced = values
    try:
        overrides = build_overrides(preset, list(field_values), advanced)
    except ValueError as exc:
        return f"⚠️ {exc}"
    v = dict(zip([f"{s}.{k}" for s, k in FIELDS], field_values, strict=True))
    episodes = int(v["rollout.group_size"] or 0) * int(v["rollout.prompts_per_step"] or 0)
    env = (
        f"environment #{environment_id} (its current version: tools, data, rubric and limits; the preset "
        "supplies the model and training recipe)"
        if environment_id
        else "the preset's built-in task"
    )
    changed = (
        ", ".join(
            f"`{s}.{k}={val}`" for s, body in overrides.items() if isinstance(body, dict) for k, val in body.items()
        )
        or "none (preset as is)"
    )
    return (
        f"**Will run:** `{v['algorithm.estimator']}` on **{v['model.name_or_path']}** with {env}, "
        f"{int(v['optim.total_steps'] or 0)} steps × {episodes} episodes "
        f"({int(v['rollout.prompts_per_step'] or 0)} prompts × group of {int(v['rollout.group_size'] or 0)}), "
        f"up to {int(v['rollout.max_turns'] or 0)} turns each, lr {v['optim.lr']}, KL {v['algorithm.kl_coef']}.\n\n"
        f"**Overrides of preset `{preset}`:** {changed}\n\n"
        "**Where:** queued on the `gpu` queue and picked up by the first worker that consumes it "
        "(`studio up` starts one on this machine; it uses CUDA when present, else the CPU)."
    )


def launch_run(
    client: StudioClient, name: str, preset: str, environment_id: int | None, *values: Any
) -> tuple[Any, str]:
    """POST /runs; returns (launched run id, status)."""
    *field_values, advanced = values
    try:
        config = build_overrides(preset, list(field_values), advanced)
        run: RunPublic = client.create_run(
            RunCreate(
                name=name.strip(),
                kind="train",
                preset=preset,  # type: ignore[arg-type]
                config=config,
                environment_id=environment_id or None,
            )
        )
    except (StudioAPIError, ValueError) as exc:
        return gr.skip(), error_markdown(exc)
    return run.id, f"🚀 Launched run **#{run.id} {run.name}** ({run.status}). Follow it on the **Runs** tab."


def environment_choices(client: StudioClient) -> dict[str, Any]:
    """The environment dropdown: the preset's task plus every saved environment."""
    try:
        envs = client.list_environments()
    except StudioAPIError as exc:
        error_markdown(exc)
        return gr.update()
    labels = [(f"#{e.id} {e.name} (v{e.version})", e.id) for e in envs]
    return gr.update(choices=[("Preset's built-in task", 0), *labels])


def describe_environment(client: StudioClient, environment_id: int | None) -> str:
    """The chosen environment version in words: tools, dataset sizes, rubric, prompt length."""
    if not environment_id:
        return ""
    try:
        env = client.get_environment(int(environment_id))
        spec = client.list_environment_versions(env.id)[-1].spec
        prompt = client.render_prompt(env.id)
        datasets = {d.id: d for d in client.list_datasets()}
    except (StudioAPIError, IndexError) as exc:
        return error_markdown(exc if isinstance(exc, StudioAPIError) else ValueError("the environment has no version"))
    tools = ", ".join(f"`{t.get('name')}`" for t in spec.get("tools") or []) or "none"
    rubric = ", ".join(f"{t.get('name')}×{t.get('weight', 1.0)}" for t in spec.get("rubric") or [])
    data = datasets.get(env.dataset_id) if env.dataset_id else None
    size = f"{data.name}: {data.counts.get('records', '?')} tasks" if data else "the built-in demo KB"
    fraction = (spec.get("data") or {}).get("heldout_fraction")
    held = f", {fraction:.0%} held out (seeded)" if isinstance(fraction, float) else ""
    return (
        f"**Environment #{env.id} {env.name} v{env.version}** · tools {tools} · data {size}{held} · "
        f"rubric {rubric} · prompt {prompt.chars} characters at turn 1 "
        f"(limits: {env.limits.max_turns} turns, {env.limits.max_new_tokens_per_turn} tokens/turn)"
    )


def _field_inputs(values: dict[str, Any]) -> tuple[Any, ...]:
    return (
        gr.Textbox(
            values["model.name_or_path"],
            label="Model",
            info="'smollm2-135m' (bundled, offline), a Hugging Face id or a local folder",
        ),
        gr.Slider(
            2,
            64,
            values["rollout.group_size"],
            step=1,
            label="Group size",
            info="Episodes sampled per prompt; GRPO compares them (needs ≥ 2)",
        ),
        gr.Slider(
            1,
            256,
            values["rollout.prompts_per_step"],
            step=1,
            label="Prompts per step",
            info="Distinct questions per training step",
        ),
        gr.Number(values["optim.lr"], label="Learning rate", info="Peak AdamW lr; 1e-6…5e-6 for full fine-tuning"),
        gr.Number(
            values["algorithm.kl_coef"],
            label="KL coefficient",
            info="Pull towards the reference model; 0 loads no reference (cheaper)",
        ),
        gr.Dropdown(
            ESTIMATORS,
            value=values["algorithm.estimator"],
            label="Advantage estimator",
            info="grpo (group-normalised), dr_grpo (no std scaling), rloo (leave-one-out), reinforce_pp, "
            "reinforce_pp_baseline, gae (needs a value head)",
        ),
        gr.Slider(
            1,
            16,
            values["rollout.max_turns"],
            step=1,
            label="Max turns",
            info="Assistant turns per episode (each may call a tool)",
        ),
        gr.Number(values["optim.total_steps"], label="Training steps", precision=0, info="Rollout + update rounds"),
    )


def build_train_tab(client: StudioClient) -> TrainTab:
    """Lay out the tab and wire its events (call inside a `gr.Tab`)."""
    gr.Markdown("Launch a multi-turn RL training run. Start with **quickstart** (CPU, bundled model).")
    with gr.Row():
        preset = gr.Radio(
            list(vocab.PRESETS),
            value="quickstart",
            label="Preset",
            scale=2,
            info=" · ".join(f"{k}: {v[1]}" for k, v in vocab.PRESETS.items()),
        )
        name = gr.Textbox(label="Run name (optional)", scale=1, elem_id="train-name")
    environment = gr.Dropdown(
        [("Preset's built-in task", 0)],
        value=0,
        label="Environment",
        info="Tools + dataset + rubric + prompt (its current version is pinned); compose one on the Environments tab",
        elem_id="train-environment",
    )
    env_summary = gr.Markdown(elem_id="train-env-summary")
    with gr.Row():
        fields = _field_inputs(preset_values("quickstart"))
    with gr.Accordion("Advanced overrides (JSON, merged section by section)", open=False):
        advanced = gr.Code(
            "{}", language="json", label='e.g. {"eval": {"num_tasks": 0}}', lines=4, elem_id="train-advanced"
        )
    summary = gr.Markdown(summarize_launch("quickstart", None, *fill_from_preset("quickstart"), "{}"))
    launch = gr.Button("Launch training", variant="primary", elem_id="train-launch")
    status = gr.Markdown(elem_id="train-status")
    launched_run = gr.Number(visible=False, precision=0)
    tab = TrainTab(name, preset, environment, fields, advanced, summary, launch, status, launched_run)
    form = [tab.preset, tab.environment, *tab.fields, tab.advanced]
    tab.preset.change(fill_from_preset, [tab.preset], list(tab.fields), api_visibility="private")
    tab.environment.change(
        functools.partial(describe_environment, client), [tab.environment], [env_summary], api_visibility="private"
    )
    for component in form:
        component.change(summarize_launch, form, [tab.summary], api_visibility="private")
    tab.launch.click(
        functools.partial(launch_run, client), [tab.name, *form], [tab.launched_run, tab.status], api_name="launch_run"
    )
    return tab
