"""Environments tab: bring data, compose an environment from saved tools, a rubric and a prompt, check it.

Uploads are previewed first (a dry run shows the columns and normalised first rows), then registered.
Saving creates or edits an environment; every save is a new immutable version (listed below). "Show
prompt" renders turn 1 on the API; "Check" queues the core's env checker on a worker (user tools and
reward functions run sandboxed there) and shows its report inline, prompt token count included.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import gradio as gr

from app.client import StudioAPIError, StudioClient
from app.tabs.common import error_markdown, parse_json_object, poll_job_run
from backend.schemas.common import RetrieverKind
from backend.schemas.environment import (
    EnvironmentCreate,
    EnvironmentSettings,
    EnvironmentUpdate,
    EnvLimits,
    RewardFunction,
    RewardModelTerm,
    RubricSpec,
)
from backend.schemas.reward_model import RewardModelPublic
from backend.schemas.run import RunPublic

EXAMPLE_REWARD = '''def reward(answer: str, gold: list[str], trajectory: dict) -> float:
    """1 when the answer matches a gold answer after stripping spaces; trajectory has turns and num_tool_calls."""
    return float(answer.strip() in [g.strip() for g in gold])
'''
EXAMPLE_STEP_REWARD = '''def reward(step: dict, task: dict) -> float:
    """Called after each assistant turn that called tools: step has index, text, calls [{name, arguments}]
    and results [{name, content, error}]; task has id, question, answers. Here: 0.1 per call that worked."""
    return 0.1 * sum(not r["error"] for r in step["results"])
'''
REWARD_KIND_CHOICES = [
    ("Once per episode: reward(answer, gold, trajectory)", "trajectory"),
    ("After each tool turn: reward(step, task) → step rewards", "step"),
]
ACCESS_LABEL = (
    'Tool network and files, per user tool (default: none). {"my_tool": {"network": ["api.example.com", '
    '"db.example.com:8443"], "files": [DATASET_ID]}}: only the listed hosts are reachable (through a filtering '
    "proxy; a bare host means ports 80/443), and each dataset's file is readable, read-only, at /data/<file name>"
)
VERSION_HEADERS = ["Version", "Saved", "Tools", "Rubric", "Tool network and files"]


@dataclass(frozen=True)
class EnvironmentsTab:
    """Component handles of the Environments tab."""

    picker: gr.Dropdown
    tools: gr.CheckboxGroup
    dataset: gr.Dropdown
    corpus: gr.Dropdown
    status: gr.Markdown
    environment_id: gr.State
    check_run_id: gr.State
    timer: gr.Timer
    reward_models: gr.CheckboxGroup


# -------------------------------------------------------------------- data


def upload_file(
    client: StudioClient,
    path: str | None,
    kind: str,
    fmt: str,
    question: str,
    answer: str,
    id_column: str,
    name: str,
    dry_run: bool,
) -> tuple[Any, str]:
    """Preview (dry run) or register an uploaded file: (preview JSON, status)."""
    if not path:
        return gr.skip(), error_markdown(ValueError("choose a file first"))
    file = Path(path)
    try:
        out = client.upload_dataset(
            file.name,
            file.read_bytes(),
            name=name.strip(),
            kind=kind,
            format=fmt,
            question_column=question.strip() or "question",
            answer_column=answer.strip() or "answer",
            id_column=id_column.strip(),
            dry_run=dry_run,
        )
    except (StudioAPIError, OSError) as exc:
        return gr.skip(), error_markdown(exc)
    preview = {"columns": out.columns, "format": out.format, "records": out.total, "first_rows": out.rows}
    if out.dataset is None:
        return preview, f"Preview: {out.total} valid record(s), format `{out.format}`. Press **Upload** to register."
    return preview, f"✅ Registered **{out.dataset.name}** (dataset #{out.dataset.id}, {out.total} records)."


# -------------------------------------------------------------------- compose


def refresh_choices(client: StudioClient) -> tuple[Any, ...]:
    """(environment picker, tools, datasets, corpora, status)."""
    try:
        envs, tools, datasets = client.list_environments(), client.list_tools(), client.list_datasets()
    except StudioAPIError as exc:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), error_markdown(exc)
    tasks = [
        (f"#{d.id} {d.name} ({d.counts.get('records', '?')} records)", d.id) for d in datasets if d.kind != "corpus"
    ]
    corpora = [
        (f"#{d.id} {d.name} ({d.counts.get('records', '?')} docs)", d.id) for d in datasets if d.kind == "corpus"
    ]
    hint = "" if envs else "No environments yet: upload data, pick tools and a rubric, then **Save environment**."
    picker = gr.update(choices=[(f"#{e.id} {e.name} (v{e.version})", e.id) for e in envs])
    tool_choices = gr.update(choices=[(f"{t.name} (v{t.version})", t.id) for t in tools])
    data = gr.update(choices=[("Built-in demo KB", 0), *tasks])
    return picker, tool_choices, data, gr.update(choices=[("None", 0), *corpora]), hint


def refresh_lists(client: StudioClient) -> tuple[Any, ...]:
    """After an upload: the four lists, leaving the upload's own status line in place."""
    return refresh_choices(client)[:4]


def reward_model_choices(client: StudioClient) -> Any:
    """The trained reward models a rubric can use: label with kind and held-out accuracy, value `<kind>:<id>`."""
    try:
        models = [m for m in client.list_reward_models() if m.status == "succeeded"]
    except StudioAPIError:
        return gr.skip()
    return gr.update(choices=[(reward_model_label(m), f"{m.kind}:{m.id}") for m in models])


def reward_model_label(model: RewardModelPublic) -> str:
    accuracy = "–" if model.heldout_accuracy is None else f"{model.heldout_accuracy:.2f}"
    use = "step_reward_model" if model.kind == "step" else "reward_model"
    return f"{use}:{model.id} {model.name} (held-out accuracy {accuracy})"


def reward_model_terms(picks: list[str] | None, weight: float | None, normalize: bool) -> list[RewardModelTerm]:
    """Picked `<kind>:<id>` values → rubric terms, all with the same weight and normalisation."""
    terms = []
    for pick in picks or []:
        kind, _, ident = str(pick).partition(":")
        if not ident.isdigit():
            raise ValueError(f"reward model choice {pick!r} is not '<kind>:<id>'; press Refresh lists")
        terms.append(
            RewardModelTerm(
                reward_model_id=int(ident),
                step=kind == "step",
                weight=1.0 if weight is None else float(weight),
                normalize=normalize,
            )
        )
    return terms


def compose(
    tool_ids: list[int],
    dataset_id: int | None,
    corpus_id: int | None,
    weights_json: str,
    reward_name: str,
    reward_weight: float | None,
    reward_source: str,
    max_turns: float,
    max_new_tokens: float,
    tool_timeout_s: float,
    system_prompt: str,
    force_first_call: str,
    answer_after_tool: bool,
    heldout_fraction: float | None,
    tool_access_json: str = "",
    reward_model_picks: list[str] | None = None,
    reward_model_weight: float | None = 1.0,
    reward_model_normalize: bool = False,
    retriever: str = "bm25",
    reward_kind: str = "trajectory",
) -> EnvironmentCreate:
    """The form as an `EnvironmentCreate` (ValueError names a bad field)."""
    weights = {k: float(v) for k, v in parse_json_object(weights_json, "rubric weights").items()}
    access = parse_json_object(tool_access_json or "{}", "tool network and files")
    functions = []
    if reward_source.strip() and reward_name.strip():
        functions.append(
            RewardFunction(
                name=reward_name.strip(),
                weight=float(reward_weight or 0.0),
                source=reward_source,
                kind=reward_kind or "trajectory",
            )
        )
    settings = EnvironmentSettings(
        system_prompt=system_prompt,
        force_first_call=force_first_call.strip() or None,
        answer_after_tool=answer_after_tool,
        heldout_fraction=heldout_fraction or None,
        tool_access=access,
        retriever=retriever or "bm25",
    )
    return EnvironmentCreate(
        name="environment",
        tool_ids=[int(t) for t in tool_ids or []],
        dataset_id=dataset_id or None,
        corpus_id=corpus_id or None,
        rubric=RubricSpec(
            weights=weights,
            functions=functions,
            reward_models=reward_model_terms(reward_model_picks, reward_model_weight, reward_model_normalize),
        ),
        limits=EnvLimits(
            max_turns=int(max_turns), max_new_tokens_per_turn=int(max_new_tokens), tool_timeout_s=float(tool_timeout_s)
        ),
        settings=settings,
    )


def example_for_kind(kind: str, source: str) -> Any:
    """Switching the reward kind swaps an untouched example for the other kind's; the user's own code stays."""
    examples = {"trajectory": EXAMPLE_REWARD, "step": EXAMPLE_STEP_REWARD}
    if source.strip() and source.strip() not in {e.strip() for e in examples.values()}:
        return gr.skip()
    return examples.get(kind, EXAMPLE_REWARD)


def save_environment(client: StudioClient, environment_id: int | None, name: str, *form: Any) -> tuple[Any, ...]:
    """Create or edit (a new version): (environment_id, picker, versions, status)."""
    try:
        env_in = compose(*form).model_copy(update={"name": name.strip() or "environment"})
        if environment_id:
            update = EnvironmentUpdate(**env_in.model_dump())
            env = client.update_environment(int(environment_id), update)
        else:
            env = client.create_environment(env_in)
        rows = version_rows(client, env.id)
        picker = gr.update(
            choices=[(f"#{e.id} {e.name} (v{e.version})", e.id) for e in client.list_environments()], value=env.id
        )
    except (StudioAPIError, ValueError) as exc:
        return gr.skip(), gr.skip(), gr.skip(), error_markdown(exc)
    return env.id, picker, rows, f"✅ Saved **{env.name}** as version {env.version}."


def version_rows(client: StudioClient, environment_id: int) -> list[list[str]]:
    rows = []
    for v in sorted(client.list_environment_versions(environment_id), key=lambda v: -v.version):
        tools = ", ".join(str(t.get("name")) for t in v.spec.get("tools") or [])
        rubric = ", ".join(
            f"{t.get('name')}×{t.get('weight', 1.0)}" + (" (step)" if t.get("kind") == "step" else "")
            for t in v.spec.get("rubric") or []
        )
        rows.append([str(v.version), v.created_at.strftime("%Y-%m-%d %H:%M"), tools, rubric, access_summary(v.spec)])
    return rows


def access_summary(spec: dict[str, Any]) -> str:
    """What each user tool may reach: 'lookup: net api.example.com; /data/table.jsonl', or 'no network, no files'."""
    parts = []
    for t in spec.get("tools") or []:
        network, files = t.get("network") or [], t.get("files") or {}
        if network or files:
            shown = ([f"net {', '.join(network)}"] if network else []) + [f"/data/{n}" for n in files]
            parts.append(f"{t.get('name')}: {'; '.join(shown)}")
    return " | ".join(parts) or "no network, no files"


def load_environment(client: StudioClient, environment_id: int | None) -> tuple[Any, ...]:
    """Fill the form from a saved environment: (id, name, tools, dataset, corpus, weights, reward name,
    weight, source, max turns, max new tokens, tool timeout, prompt, forced call, answer prefill, held-out,
    tool network and files, reward models, their weight and z-score, retriever, reward kind, versions, status)."""
    if not environment_id:
        return (None, *[gr.skip()] * 22, "")
    try:
        env = client.get_environment(int(environment_id))
        rows = version_rows(client, env.id)
    except StudioAPIError as exc:
        return (gr.skip(),) * 23 + (error_markdown(exc),)
    fn = env.rubric.functions[0] if env.rubric.functions else None
    s, lim, rms = env.settings, env.limits, env.rubric.reward_models
    picks = [f"{'step' if t.step else 'trajectory'}:{t.reward_model_id}" for t in rms]
    return (
        env.id,
        env.name,
        env.tool_ids,
        env.dataset_id or 0,
        env.corpus_id or 0,
        json.dumps(env.rubric.weights),
        fn.name if fn else "",
        fn.weight if fn else 0.0,
        fn.source if fn else EXAMPLE_REWARD,
        lim.max_turns,
        lim.max_new_tokens_per_turn,
        lim.tool_timeout_s,
        s.system_prompt,
        s.force_first_call or "",
        s.answer_after_tool,
        s.heldout_fraction,
        access_json(env.settings.tool_access),
        picks,
        rms[0].weight if rms else 1.0,
        rms[0].normalize if rms else False,
        s.retriever,
        fn.kind if fn else "trajectory",
        rows,
        f"Loaded **{env.name}** v{env.version}.",
    )


def access_json(tool_access: dict[str, Any]) -> str:
    return json.dumps({name: a.model_dump() for name, a in tool_access.items()}, indent=1) if tool_access else "{}"


# -------------------------------------------------------------------- prompt, check, export


def show_prompt(client: StudioClient, environment_id: int | None) -> tuple[Any, str]:
    if not environment_id:
        return gr.skip(), error_markdown(ValueError("save the environment first"))
    try:
        preview = client.render_prompt(int(environment_id))
    except StudioAPIError as exc:
        return gr.skip(), error_markdown(exc)
    return preview.model_dump(), f"Turn 1 of version {preview.version}: {preview.chars} characters. {preview.note}"


def start_check(client: StudioClient, environment_id: int | None) -> tuple[Any, ...]:
    """Queue the check: (check_run_id, status, report, timer)."""
    if not environment_id:
        return None, error_markdown(ValueError("save the environment first")), None, gr.Timer(active=False)
    try:
        run = client.validate_environment(int(environment_id))
    except StudioAPIError as exc:
        return None, error_markdown(exc), None, gr.Timer(active=False)
    return run.id, f"⏳ Check queued as run #{run.id}…", None, gr.Timer(active=True)


def poll_check(client: StudioClient, run_id: int | None) -> tuple[Any, ...]:
    """(status, report, timer): the report inline once the run finished."""
    polled = poll_job_run(client, run_id, lambda run: f"⏳ Check run #{run.id} is {run.status}…")
    if not isinstance(polled, RunPublic):
        return polled
    run = polled
    report = run.result or {}
    tokens = (report.get("prompt") or {}).get("tokens")
    shown = f" Prompt: {tokens} tokens." if tokens else ""
    if report.get("ok"):
        return f"✅ All checks passed on {report.get('tasks_checked')} task(s).{shown}", report, gr.Timer(active=False)
    failures = report.get("failures") or [run.error or run.status]
    return f"❌ {len(failures)} problem(s): {failures[0]}{shown}", report, gr.Timer(active=False)


def export_environment(client: StudioClient, environment_id: int | None) -> tuple[Any, str]:
    if not environment_id:
        return gr.skip(), error_markdown(ValueError("save the environment first"))
    try:
        data = client.export_environment(int(environment_id))
    except StudioAPIError as exc:
        return gr.skip(), error_markdown(exc)
    return json.dumps(data, indent=2), "Exported (tool and reward sources inlined); save it as a .json file."


def import_environment(client: StudioClient, text: str) -> str:
    try:
        data = parse_json_object(text, "environment file")
        env = client.import_environment(dict(data.get("environment", data)))
    except (StudioAPIError, ValueError) as exc:
        return error_markdown(exc)
    return f"✅ Imported as environment #{env.id} **{env.name}**."


# -------------------------------------------------------------------- layout


def build_environments_tab(client: StudioClient, *, poll_interval_s: float = 1.0) -> EnvironmentsTab:
    """Lay out the tab and wire its events (call inside a `gr.Tab`)."""
    status = gr.Markdown(elem_id="env-status")
    with gr.Accordion("1 · Bring data: a task file or a document corpus", open=True):
        with gr.Row():
            upload = gr.File(label="JSONL / JSON / CSV / Parquet", type="filepath", elem_id="env-upload-file")
            with gr.Column():
                kind = gr.Radio(["tasks", "corpus"], value="tasks", label="Kind", elem_id="env-upload-kind")
                fmt = gr.Dropdown(["auto", "flat", "hotpotqa", "2wiki", "musique"], value="auto", label="Format")
                data_name = gr.Textbox(label="Name (default: the file name)")
            with gr.Column():
                question = gr.Textbox("question", label="Question column")
                answer = gr.Textbox("answer", label="Answer column")
                id_column = gr.Textbox("", label="Id column (optional)")
        with gr.Row():
            preview_btn = gr.Button("Preview")
            upload_btn = gr.Button("Upload", variant="primary", elem_id="env-upload")
        preview = gr.JSON(label="Columns and first rows (normalised)")
    with gr.Accordion("2 · Compose", open=True):
        with gr.Row():
            picker = gr.Dropdown(label="Saved environments", choices=[], value=None, scale=3)
            refresh = gr.Button("Refresh lists", scale=1, elem_id="env-refresh")
        name = gr.Textbox(label="Name", elem_id="env-name")
        tools = gr.CheckboxGroup(
            label="Tools (saved on the Tools tab; several at once)", choices=[], elem_id="env-tools"
        )
        with gr.Row():
            dataset = gr.Dropdown(label="Tasks", choices=[("Built-in demo KB", 0)], value=0, elem_id="env-dataset")
            corpus = gr.Dropdown(
                label="Corpus for the search tool", choices=[("None", 0)], value=0, elem_id="env-corpus"
            )
            retriever = gr.Dropdown(
                list(get_args(RetrieverKind)),
                value="bm25",
                elem_id="env-retriever",
                label="Search ranks it with (dense: the bundled all-MiniLM-L6-v2)",
            )
        weights = gr.Code(
            '{"exact_match": 1.0, "format": 0.1}',
            language="json",
            lines=2,
            label="Built-in reward weights (0 = metric only)",
            elem_id="env-weights",
        )
        with gr.Row():
            reward_name = gr.Textbox("", label="User reward term name (empty: none)", elem_id="env-reward-name")
            reward_weight = gr.Number(0.5, label="Its weight", elem_id="env-reward-weight")
            reward_kind = gr.Radio(REWARD_KIND_CHOICES, value="trajectory", label="Called", elem_id="env-reward-kind")
        reward_source = gr.Code(
            EXAMPLE_REWARD, language="python", lines=6, label="User reward function", elem_id="env-reward-source"
        )
        with gr.Row():
            reward_models = gr.CheckboxGroup(
                label="Trained reward models as rubric terms (Label tab → Train)",
                choices=[],
                elem_id="env-reward-models",
                scale=3,
            )
            rm_weight = gr.Number(1.0, label="Their weight", scale=1)
            rm_normalize = gr.Checkbox(True, label="Z-score per step", scale=1)
        with gr.Row():
            max_turns = gr.Slider(1, 16, 3, step=1, label="Max turns")
            max_new = gr.Number(96, precision=0, label="Max new tokens per turn", elem_id="env-max-new")
            timeout = gr.Number(10, label="Tool time limit (s)")
            heldout = gr.Number(None, label="Held-out fraction (empty: server default)")
        system_prompt = gr.Textbox("", lines=4, label="System prompt ({answer_tag} is replaced; empty: default)")
        with gr.Row():
            forced = gr.Textbox("", label="Force the first call to this tool (prefill)", elem_id="env-forced")
            answer_prefill = gr.Checkbox(
                False, label="Prefill the answer tag after tool results", elem_id="env-answer-prefill"
            )
        tool_access = gr.Code("{}", language="json", lines=3, elem_id="env-tool-access", label=ACCESS_LABEL)
        save = gr.Button("Save environment (new version)", variant="primary", elem_id="env-save")
        versions = gr.Dataframe(headers=VERSION_HEADERS, label="Versions", interactive=False)
    with gr.Accordion("3 · What the model sees, and Check", open=True):
        with gr.Row():
            prompt_btn = gr.Button("Show prompt")
            check_btn = gr.Button("Check", elem_id="env-check")
        check_status = gr.Markdown(elem_id="env-check-status")
        shown = gr.JSON(label="Prompt / check report", elem_id="env-report")
    with gr.Accordion("4 · Export / import (one JSON file, sources inlined)", open=False):
        with gr.Row():
            export_btn = gr.Button("Export")
            import_btn = gr.Button("Import")
        file_text = gr.Code("", language="json", lines=10, label="Environment file")
    environment_id, check_run_id = gr.State(None), gr.State(None)
    timer = gr.Timer(poll_interval_s, active=False)
    form = [
        tools,
        dataset,
        corpus,
        weights,
        reward_name,
        reward_weight,
        reward_source,
        max_turns,
        max_new,
        timeout,
        system_prompt,
        forced,
        answer_prefill,
        heldout,
        tool_access,
        reward_models,
        rm_weight,
        rm_normalize,
        retriever,
        reward_kind,
    ]
    upload_inputs = [upload, kind, fmt, question, answer, id_column, data_name]
    preview_btn.click(
        functools.partial(upload_file, client, dry_run=True), upload_inputs, [preview, status], api_visibility="private"
    )
    upload_btn.click(
        functools.partial(upload_file, client, dry_run=False),
        upload_inputs,
        [preview, status],
        api_name="upload_dataset",
    ).then(functools.partial(refresh_lists, client), None, [picker, tools, dataset, corpus], api_visibility="private")
    refresh.click(
        functools.partial(refresh_choices, client),
        None,
        [picker, tools, dataset, corpus, status],
        api_visibility="private",
    ).then(functools.partial(reward_model_choices, client), None, [reward_models], api_visibility="private")
    reward_kind.input(example_for_kind, [reward_kind, reward_source], [reward_source], api_visibility="private")
    save.click(
        functools.partial(save_environment, client),
        [environment_id, name, *form],
        [environment_id, picker, versions, status],
        api_name="save_environment",
    )
    picker.input(
        functools.partial(load_environment, client),
        [picker],
        [environment_id, name, *form, versions, status],
        api_visibility="private",
    )
    prompt_btn.click(
        functools.partial(show_prompt, client), [environment_id], [shown, check_status], api_visibility="private"
    )
    check_btn.click(
        functools.partial(start_check, client),
        [environment_id],
        [check_run_id, check_status, shown, timer],
        api_name="check_environment",
    )
    timer.tick(
        functools.partial(poll_check, client), [check_run_id], [check_status, shown, timer], api_visibility="private"
    )
    export_btn.click(
        functools.partial(export_environment, client), [environment_id], [file_text, status], api_visibility="private"
    )
    import_btn.click(functools.partial(import_environment, client), [file_text], [status], api_visibility="private")
    return EnvironmentsTab(picker, tools, dataset, corpus, status, environment_id, check_run_id, timer, reward_models)
