"""`studio`: the one command that runs Agent Studio.

`studio up` runs everything on one machine (migrations, embedded Redis, API,
a Celery worker, the UI); `studio api|worker|ui` run one part each for
multi-machine deployments. RL commands (`train`, `rollout`, `eval`,
`trajectories`) are forwarded to the core's own CLIs, imported lazily so the
web processes never load torch.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from backend.core.config import Settings, get_settings
from backend.core.security import ensure_private_dir, ensure_private_file
from studio import preflight
from studio.embedded_redis import EmbeddedRedisError
from studio.processes import alembic_config, api_args, ui_args, upgrade, worker_args

app = typer.Typer(
    name="studio",
    help="Agent Studio: train tool-using LLM agents with multi-turn RL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")
users_app = typer.Typer(help="Accounts: named users with a role and a token (stored hashed).", no_args_is_help=True)
app.add_typer(users_app, name="users")
console = Console()
err_console = Console(stderr=True)
REPO_ROOT = Path(__file__).resolve().parents[1]
FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load_settings() -> Settings:
    try:
        settings = get_settings()
    except Exception as exc:  # pydantic ValidationError: name the variable
        raise fail(f"invalid STUDIO_* setting: {exc}".replace("\n", " ")) from None
    ensure_private_dir(settings.data_dir)
    if not settings.database_url:  # the default SQLite file: 0600 before Alembic or SQLite first create it
        ensure_private_file(settings.data_dir / "studio.db")
    return settings


# ---------------------------------------------------------------- database


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = _load_settings()
    try:
        upgrade(settings, revision)
    except preflight.ConfigError as exc:
        raise fail(str(exc)) from None
    console.print(f"database at {preflight.redact(settings.resolved_database_url)} is at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")]) -> None:
    """Revert migrations down to REVISION."""
    from alembic import command

    settings = _load_settings()
    try:
        preflight.check_database(settings.resolved_database_url)
    except preflight.ConfigError as exc:
        raise fail(str(exc)) from None
    command.downgrade(alembic_config(settings), revision)


@db_app.command("current")
def db_current() -> None:
    """Show the database's current revision."""
    from alembic import command

    settings = _load_settings()
    try:
        preflight.check_database(settings.resolved_database_url)
    except preflight.ConfigError as exc:
        raise fail(str(exc)) from None
    command.current(alembic_config(settings), verbose=False)


# ---------------------------------------------------------------- users

ROLES = ("admin", "trainer", "labeler")


def _users_session(settings: Settings):  # type: ignore[no-untyped-def]
    """A DB session on a database at the migrations head (users live in revision 0002_users)."""
    from sqlalchemy.orm import Session

    from backend.core.db import check_schema_current, engine_for
    from backend.core.errors import SchemaOutdatedError

    try:
        preflight.check_database(settings.resolved_database_url)
        engine = engine_for(settings.resolved_database_url)
        check_schema_current(engine)
    except (preflight.ConfigError, SchemaOutdatedError) as exc:
        raise fail(str(exc)) from None
    return Session(engine, expire_on_commit=False)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="Account name (letters, digits, _ . -).")],
    role: Annotated[str, typer.Option(help="admin | trainer | labeler.")] = "labeler",
    password: Annotated[bool, typer.Option("--password", help="Also set a password (asked twice, hidden).")] = False,
) -> None:
    """Create a user and print its token once (only its hash is stored)."""
    from pydantic import ValidationError

    from backend.core.errors import StudioError
    from backend.crud import users as users_crud
    from backend.schemas.user import UserCreate

    if role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    secret = typer.prompt("Password", hide_input=True, confirmation_prompt=True) if password else None
    try:
        user_in = UserCreate(name=name, role=role, password=secret)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise fail(f"invalid user: {problems}") from None
    with _users_session(_load_settings()) as session:
        try:
            user, token = users_crud.create_user(session, user_in=user_in)
        except StudioError as exc:
            raise fail(exc.detail) from None
        session.commit()
        console.print(f"created {user.role} {user.name!r}; its token (shown only now, store it safely):")
        print(token)  # plain stdout, so scripts can capture it


@users_app.command("list")
def users_list() -> None:
    """Show every user with its role and state (never a token)."""
    from backend.crud import users as users_crud

    with _users_session(_load_settings()) as session:
        table = Table(show_header=True)
        for column in ("name", "role", "state", "created"):
            table.add_column(column)
        for user in users_crud.list_users(session, limit=None):
            state = "disabled" if user.disabled else "active"
            table.add_row(user.name, user.role, state, user.created_at.isoformat(timespec="seconds"))
        console.print(table)


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument(help="The account to disable.")]) -> None:
    """Disable a user: its token and login sessions stop working at once."""
    from backend.core.errors import StudioError
    from backend.crud import users as users_crud

    with _users_session(_load_settings()) as session:
        try:
            users_crud.disable_user(session, name=name)
        except StudioError as exc:
            raise fail(exc.detail) from None
        session.commit()
    console.print(f"disabled {name!r}")


# ---------------------------------------------------------------- processes


def _exec(args: list[str], env: dict[str, str] | None = None) -> None:
    os.execve(args[0], args, env or dict(os.environ))


@app.command()
def api() -> None:
    """Run the FastAPI server alone (needs a migrated DB and a reachable Redis)."""
    settings = _load_settings()
    try:
        preflight.check_access(settings)
        preflight.check_port_free(settings.api_host, settings.api_port, "API", "STUDIO_API_PORT")
        preflight.check_database(settings.resolved_database_url)
        if settings.redis_url:
            preflight.check_redis(settings.redis_url)
    except preflight.ConfigError as exc:
        raise fail(str(exc)) from None
    _exec(api_args(settings))


@app.command()
def worker(
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues, e.g. gpu or cpu,gpu.")] = None,
) -> None:
    """Run one Celery worker alone (point STUDIO_REDIS_URL/STUDIO_DATABASE_URL at shared services)."""
    settings = _load_settings()
    if not settings.redis_url:
        raise fail("a standalone worker needs STUDIO_REDIS_URL (the broker the API uses); `studio up` runs one for you")
    try:
        preflight.check_redis(settings.redis_url)
        preflight.check_database(settings.resolved_database_url)
    except preflight.ConfigError as exc:
        raise fail(str(exc)) from None
    _exec(worker_args(settings, queues))


@app.command()
def ui() -> None:
    """Run the Gradio UI alone (STUDIO_API_URL says where the API is)."""
    settings = _load_settings()
    try:
        preflight.check_port_free(settings.ui_host, settings.ui_port, "UI", "STUDIO_UI_PORT")
    except preflight.ConfigError as exc:
        raise fail(str(exc)) from None
    _exec(ui_args())


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Also launch the quickstart training run on the bundled model.")] = False,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Do not start the Gradio UI.")] = False,
    ready_timeout_s: Annotated[float, typer.Option(help="How long to wait for every part to be healthy.")] = 180.0,
) -> None:
    """Run the whole studio on this machine; Ctrl-C or SIGTERM stops everything."""
    from studio.launcher import run_studio

    settings = _load_settings()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = run_studio(settings, demo=demo, with_ui=not no_ui, ready_timeout_s=ready_timeout_s, console=console)
    except (preflight.ConfigError, EmbeddedRedisError) as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(code)


# ---------------------------------------------------------------- RL commands (forwarded)


# Each command imports its target inside the function: the launcher's own process never loads the ML stack.


def _forward(target: typer.Typer, args: list[str]) -> None:
    target(args=args, prog_name="studio", standalone_mode=True)


@app.command(context_settings=FORWARD, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train a policy from a config file: `studio train CONFIG [--resume RUN_DIR] [--nproc N]`."""
    from worker.rl.cli import app as rl_app

    _forward(rl_app, ["train", *ctx.args])


@app.command(context_settings=FORWARD, add_help_option=False)
def rollout(ctx: typer.Context) -> None:
    """Collect rollouts only (no update): `studio rollout CONFIG`."""
    from worker.rl.cli import app as rl_app

    _forward(rl_app, ["rollout", *ctx.args])


@app.command(context_settings=FORWARD, add_help_option=False)
def trajectories(ctx: typer.Context) -> None:
    """Trajectory exports: `studio trajectories check FILE`."""
    from worker.rl.cli import app as rl_app

    _forward(rl_app, ["trajectories", *ctx.args])


@app.command("eval", context_settings=FORWARD, add_help_option=False)
def evaluate(ctx: typer.Context) -> None:
    """Evaluate on HotpotQA / 2Wiki / MuSiQue: `studio eval --datasets ... --method ...`."""
    from worker.rl.evaluation.cli import app as eval_app

    _forward(eval_app, ["eval", *ctx.args])


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    app()


if __name__ == "__main__":
    main()
