"""Environment versions: resolve an environment row into its spec (sources inlined), write immutable versions.

The spec dict has the shape of the worker's `worker.rl.envs.spec.EnvSpec.to_dict()`; it is the contract
between the API (which builds it without importing the worker) and every job that trains in it.
User code keys: `tool-<id>-v<version>` for a tool version, `reward-<env>-v<version>-<name>` for a reward.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.core.config import get_settings
from backend.core.errors import InvalidInputError, NotFoundError
from backend.crud.reward_models import check_reward_model
from backend.hosts import parse_host_entry
from backend.models.dataset import Dataset, Environment, EnvironmentVersion
from backend.models.tool import Tool, ToolVersion
from backend.schemas.common import BUILTIN_REWARDS, REWARD_ARGUMENTS, REWARD_KINDS, TOOL_ALIASES
from backend.schemas.common import BUILTIN_TOOLS as CORE_TOOLS
from backend.schemas.environment import EnvironmentSettings, EnvLimits, RubricSpec

BUILTIN_TOOLS = {**TOOL_ALIASES, **{name: name for name in CORE_TOOLS}}
"""Builtin tool sources → the worker's built-in tool names."""


def check_reward_source(name: str, source: str, kind: str = "trajectory", *, where: str = "rubric.functions") -> None:
    """The source parses and defines `reward` with the arguments of its kind (parsed with ast, never executed)."""
    field = f"{where}.{name}"
    if kind not in REWARD_ARGUMENTS:
        raise InvalidInputError(f"{field}.kind", f"{kind!r} is not one of {', '.join(REWARD_KINDS)}")
    wanted = REWARD_ARGUMENTS[kind]
    signature = f"def reward({', '.join(wanted)}) -> float"
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise InvalidInputError(field, f"line {exc.lineno}: {exc.msg}") from exc
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "reward"]
    if not funcs:
        raise InvalidInputError(field, f"define `{signature}`")
    args = [a.arg for a in funcs[0].args.args]
    if tuple(args[: len(wanted)]) != wanted:
        other = next((k for k, v in REWARD_ARGUMENTS.items() if k != kind and tuple(args[: len(v)]) == v), None)
        hint = f"; that is a {other!r} function: set kind = {other!r}" if other else ""
        raise InvalidInputError(field, f"a {kind!r} reward takes ({', '.join(wanted)}), got {args}{hint}")


def _tool_entry(tool: Tool, settings: EnvironmentSettings) -> dict[str, Any]:
    if tool.kind == "builtin":
        builtin = BUILTIN_TOOLS.get(tool.source)
        if builtin is None:
            known = ", ".join(BUILTIN_TOOLS)
            raise InvalidInputError("tool_ids", f"builtin tool {tool.source!r} is not one of {known}")
        params = dict(tool.params)
        if builtin == "search":
            params = {"top_k": settings.top_k, "max_passage_chars": settings.max_passage_chars, **params}
        return {"name": builtin, "builtin": builtin, "params": params, "tool_id": tool.id, "version": tool.version}
    schema = dict(tool.tool_schema)
    return {
        "name": tool.name,
        "key": f"tool-{tool.id}-v{tool.version}",
        "description": schema.get("description", ""),
        "parameters": schema.get("parameters") or {"type": "object", "properties": {}},
        "source": tool.source,
        "function": schema.get("name") or tool.name,
        "tool_id": tool.id,
        "version": tool.version,
    }


def check_network(where: str, hosts: list[str]) -> list[str]:
    """Allow-list entries normalised (lowercase); 422 naming the first one that is not a host[:port]."""
    for entry in hosts:
        try:
            parse_host_entry(entry)
        except ValueError as exc:
            raise InvalidInputError(where, str(exc)) from exc
    return [entry.strip().lower() for entry in hosts]


def check_tool_file(where: str, path: str) -> str:
    """A declared tool file: an uploaded or registered file under the data roots (resolved), else 422."""
    resolved = Path(path).expanduser().resolve()
    problem = get_settings().tool_file_problem(resolved)
    if problem is not None:
        raise InvalidInputError(where, problem)
    return str(resolved)


def _tool_files(session: Session, tool_name: str, dataset_ids: list[int]) -> dict[str, str]:
    """Dataset ids -> {file name: path}, the read-only mounts /data/<file name> of one tool."""
    files: dict[str, str] = {}
    where = f"settings.tool_access.{tool_name}.files"
    for ident in dataset_ids:
        dataset = _live(session, Dataset, ident, where)
        if dataset.kind not in ("file", "corpus"):
            raise InvalidInputError(where, f"dataset {ident} is a {dataset.kind} dataset, not a file")
        path = check_tool_file(where, dataset.location)
        name = Path(path).name
        if name in files:
            raise InvalidInputError(where, f"two files are named {name!r} (/data/{name}); attach one of them")
        files[name] = path
    return files


def _with_access(session: Session, tools: list[dict[str, Any]], settings: EnvironmentSettings) -> None:
    """Put each user tool's network allow-list and files (from `settings.tool_access`) into its spec entry."""
    user_tools = {t["name"]: t for t in tools if t.get("key")}
    unknown = sorted(set(settings.tool_access) - set(user_tools))
    if unknown:
        raise InvalidInputError(
            "settings.tool_access",
            f"{', '.join(unknown)}: not a user tool of this environment "
            f"(user tools: {', '.join(user_tools) or 'none'})",
        )
    for name, access in settings.tool_access.items():
        user_tools[name]["network"] = check_network(f"settings.tool_access.{name}.network", access.network)
        user_tools[name]["files"] = _tool_files(session, name, access.files)


def check_imported_access(session: Session, spec: dict[str, Any]) -> None:
    """An imported spec's tool allow-lists parse and its tool files lie under the data roots (422 otherwise)."""
    for i, tool in enumerate(spec.get("tools") or []):
        network, files = tool.get("network") or [], tool.get("files") or {}
        if not isinstance(network, list) or not all(isinstance(h, str) for h in network):
            raise InvalidInputError(f"spec.tools[{i}].network", "must be a list of host[:port] strings")
        if not isinstance(files, dict) or not all(isinstance(p, str) for p in files.values()):
            raise InvalidInputError(f"spec.tools[{i}].files", "must map file names to paths")
        if "network" in tool:
            tool["network"] = check_network(f"spec.tools[{i}].network", network)
        if "files" in tool:
            tool["files"] = {
                name: _registered_file(session, f"spec.tools[{i}].files.{name}", p) for name, p in files.items()
            }


def _registered_file(session: Session, where: str, path: str) -> str:
    """An imported tool file must be the file of a live dataset of this studio (and pass `check_tool_file`)."""
    resolved = check_tool_file(where, path)
    rows = session.scalars(select(Dataset).where(Dataset.deleted_at.is_(None), Dataset.kind.in_(("file", "corpus"))))
    if not any(str(Path(row.location).expanduser().resolve()) == resolved for row in rows):
        raise InvalidInputError(where, f"{path} is not the file of a dataset of this studio; upload it first")
    return resolved


def _data_entry(dataset: Dataset | None, settings: EnvironmentSettings) -> dict[str, Any]:
    fraction = settings.heldout_fraction or get_settings().heldout_fraction
    if dataset is None or dataset.kind == "demo":
        location = dataset.location if dataset is not None else "0"
        return {"source": "demo", "location": location, "seed": settings.split_seed}
    if dataset.kind == "corpus":
        raise InvalidInputError("dataset_id", f"dataset {dataset.id} is a corpus; attach it as corpus_id")
    return {
        "source": dataset.kind,
        "location": dataset.location,
        "format": dataset.format,
        "heldout_fraction": fraction,
        "seed": settings.split_seed,
    }


def resolve_spec(session: Session, env: Environment, *, version: int) -> dict[str, Any]:
    """The environment as the worker's `EnvSpec` dict, with the current tool versions pinned and inlined."""
    settings = EnvironmentSettings.model_validate(env.settings or {})
    rubric = RubricSpec.model_validate(env.rubric or {})
    limits = EnvLimits.model_validate(env.limits or {})
    tools = [_tool_entry(_live(session, Tool, t, "tool_ids"), settings) for t in env.tool_ids]
    _with_access(session, tools, settings)
    unknown = sorted(set(rubric.weights) - set(BUILTIN_REWARDS))
    if unknown:
        raise InvalidInputError(
            "rubric.weights", f"unknown term(s) {', '.join(unknown)}; built-ins are {', '.join(BUILTIN_REWARDS)}"
        )
    terms: list[dict[str, Any]] = [{"name": k, "weight": w, "builtin": k} for k, w in rubric.weights.items()]
    for fn in rubric.functions:
        check_reward_source(fn.name, fn.source, fn.kind)
        terms.append(
            {
                "name": fn.name,
                "weight": fn.weight,
                "key": f"reward-{env.id}-v{version}-{fn.name}",
                "source": fn.source,
                "function": "reward",
                "kind": fn.kind,
            }
        )
    for i, rm in enumerate(rubric.reward_models):
        check_reward_model(session, ident=rm.reward_model_id, step=rm.step, field=f"rubric.reward_models[{i}]")
        key = "step_reward_model" if rm.step else "reward_model"
        terms.append(
            {
                "name": f"{key}-{rm.reward_model_id}",
                "weight": rm.weight,
                key: rm.reward_model_id,
                "normalize": rm.normalize,
            }
        )
    names = [t["name"] for t in terms]
    if len(set(names)) != len(names) or not terms:
        raise InvalidInputError("rubric", f"term names must be unique and at least one given, got {names}")
    tool_names = [t["name"] for t in tools]
    if settings.force_first_call is not None and settings.force_first_call not in tool_names:
        raise InvalidInputError(
            "settings.force_first_call",
            f"{settings.force_first_call!r} is not one of the environment's tools ({', '.join(tool_names) or 'none'})",
        )
    dataset = _live(session, Dataset, env.dataset_id, "dataset_id") if env.dataset_id is not None else None
    corpus = _live(session, Dataset, env.corpus_id, "corpus_id") if env.corpus_id is not None else None
    if corpus is not None and corpus.kind != "corpus":
        raise InvalidInputError("corpus_id", f"dataset {corpus.id} is a {corpus.kind} dataset, not a corpus")
    return {
        "name": env.name,
        "environment_id": env.id,
        "version": version,
        "tools": tools,
        "data": _data_entry(dataset, settings),
        "corpus": {"location": corpus.location if corpus else None, "retriever": settings.retriever},
        "rubric": terms,
        "answer_tag": rubric.answer_tag,
        "limits": limits.model_dump(),
        "system_prompt": settings.system_prompt,
        "question_template": settings.question_template,
        "show_tool_schemas": settings.show_tool_schemas,
        "prefill": {
            "force_first_call": settings.force_first_call,
            "first_turn_prefill": settings.first_turn_prefill,
            "answer_after_tool": settings.answer_after_tool,
        },
    }


def _live(session: Session, model: type[Any], ident: int | None, field: str) -> Any:
    row = session.get(model, ident) if ident is not None else None
    if row is None or getattr(row, "deleted_at", None) is not None:
        raise InvalidInputError(field, f"{model.__tablename__[:-1]} {ident} does not exist")
    return row


def write_version(session: Session, env: Environment, *, version: int, spec: dict[str, Any] | None = None) -> Any:
    """Freeze `env` as version `version` (the resolved spec, or `spec` as imported)."""
    frozen = spec if spec is not None else resolve_spec(session, env, version=version)
    row = EnvironmentVersion(
        environment_id=env.id, version=version, spec={**frozen, "version": version, "environment_id": env.id}
    )
    env.version = version
    session.add(row)
    session.flush()
    return row


def current_version(session: Session, *, environment_id: int) -> EnvironmentVersion:
    env = session.get(Environment, environment_id)
    if env is None:
        raise NotFoundError("environment", environment_id)
    return get_version(session, environment_id=environment_id, version=env.version)


def get_version(session: Session, *, environment_id: int, version: int) -> EnvironmentVersion:
    row = session.scalar(
        select(EnvironmentVersion).where(
            EnvironmentVersion.environment_id == environment_id, EnvironmentVersion.version == version
        )
    )
    if row is None:
        raise NotFoundError("environment version", f"{environment_id}/v{version}")
    return row


def get_version_by_id(session: Session, *, version_id: int) -> EnvironmentVersion:
    row = session.get(EnvironmentVersion, version_id)
    if row is None:
        raise NotFoundError("environment version", version_id)
    return row


def list_versions(session: Session, *, environment_id: int) -> list[EnvironmentVersion]:
    query = select(EnvironmentVersion).where(EnvironmentVersion.environment_id == environment_id)
    return list(session.scalars(query.order_by(EnvironmentVersion.version)))


def tool_versions_exist(session: Session, spec: dict[str, Any]) -> None:
    """Every pinned tool version of an imported spec that names a studio tool still exists (else it is inlined)."""
    for tool in spec.get("tools") or []:
        if tool.get("tool_id") is not None and tool.get("version") is not None:
            found = session.scalar(
                select(ToolVersion).where(
                    ToolVersion.tool_id == tool["tool_id"], ToolVersion.version == tool["version"]
                )
            )
            if found is None:
                tool["tool_id"] = None  # the inlined source is the truth


DEFAULT_PROMPT = (
    "You are a helpful assistant that solves the user's problem step by step, calling the tools when useful. "
    "When you know the answer, write only the answer inside <{answer_tag}></{answer_tag}> tags."
)
"""Mirrors `worker.rl.envs.from_spec.DEFAULT_PROMPT` (the API renders without importing the worker)."""


def prompt_preview(spec: dict[str, Any], *, environment_id: int, version: int) -> Any:
    """The turn-1 view of `spec` as `PromptPreview` (a sample question stands in for a task's)."""
    from backend.schemas.environment import PromptPreview

    tag = str(spec.get("answer_tag") or "answer")
    system = str(spec.get("system_prompt") or DEFAULT_PROMPT).replace("{answer_tag}", tag)
    user = str(spec.get("question_template") or "{question}").replace("{question}", "<the task's question>")
    schemas = []
    for tool in spec.get("tools") or []:
        if tool.get("builtin") == "search":
            params = {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to look up"}},
                "required": ["query"],
            }
            desc = "Search the knowledge base for passages relevant to a query."
        elif tool.get("builtin") == "calculator":
            params = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
            desc = "Evaluate an arithmetic expression and return the result."
        else:
            params, desc = tool.get("parameters") or {}, str(tool.get("description") or "")
        schemas.append(
            {"type": "function", "function": {"name": tool.get("name"), "description": desc, "parameters": params}}
        )
    shown = schemas if spec.get("show_tool_schemas", True) else []
    prefill = spec.get("prefill") or {}
    first = str(prefill.get("first_turn_prefill") or "")
    if prefill.get("force_first_call"):
        first = '<tool_call>{"name": "' + str(prefill["force_first_call"]) + '", "arguments": {'
    chars = len(system) + len(user) + sum(len(str(s)) for s in shown) + len(first)
    note = "token count: run Check (the worker counts tokens with the model's tokenizer and chat template)"
    return PromptPreview(
        environment_id=environment_id,
        version=version,
        system_prompt=system,
        user_message=user,
        tool_schemas=shown,
        first_turn_prefill=first,
        chars=chars,
        note=note,
    )
