"""`python -m worker.rl.cli`: train, rollout-only and trajectory checks, without DB or Celery.

The typer `app` is also mounted under the `studio` CLI. Config mistakes print one
clear line and exit 2; progress goes to the terminal through rich.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from worker.rl.training.config import TrainConfig, load_config, override

app = typer.Typer(help="Agent Studio RL core: multi-turn tool-use training.", no_args_is_help=True)
trajectories_app = typer.Typer(help="Inspect trajectory JSONL exports.", no_args_is_help=True)
app.add_typer(trajectories_app, name="trajectories")
console = Console(stderr=True)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: section.key=value")]


def _load(config_path: Path, sets: list[str] | None, output_dir: Path | None) -> TrainConfig:
    try:
        cfg = override(load_config(config_path), list(sets or []))
        if output_dir is not None:
            cfg = override(cfg, [f"logging.output_dir={json.dumps(str(output_dir))}"])
    except ValueError as err:
        console.print(f"[red]config error:[/red] {err}")
        raise typer.Exit(2) from None
    return cfg


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Run spec (.toml or .yaml)")],
    resume: Annotated[Path | None, typer.Option(help="Resume from this run dir (its latest checkpoint)")] = None,
    output_dir: Annotated[Path | None, typer.Option(help="Run directory (overrides logging.output_dir)")] = None,
    set_: SetOpt = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            min=1,
            help="Ranks of one data-parallel job (overrides parallel.nproc): gloo on CPU, nccl with one GPU per rank",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run RL training from a config file (`--nproc N`: one job across N processes)."""
    from worker.rl.training.trainer import train as run_training

    _setup_logging(verbose)
    cfg = _load(config, [*(set_ or []), *([f"parallel.nproc={nproc}"] if nproc is not None else [])], output_dir)
    run_dir = Path(cfg.logging.output_dir) if resume is None else resume
    total = cfg.optim.total_steps

    def on_step(step: int, metrics: dict[str, float], _trajs: object) -> None:
        shown = [f"{k}={metrics[k]:.3f}" for k in ("reward/mean", "reward/answer", "loss/policy") if k in metrics]
        shown += [f"{k}={metrics[k]:.3f}" for k in ("eval/answer",) if k in metrics]
        console.print(
            f"[bold]step {step}/{total}[/bold] " + " ".join(shown) + f" ({metrics.get('perf/step_s', 0):.1f}s)"
        )

    try:
        with console.status("training…"):
            result = run_training(cfg, run_dir=run_dir, resume_from=resume, on_step=on_step)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    console.print(f"[green]{result.status}[/green] after {result.steps_done} steps; run dir {result.run_dir}")
    print(json.dumps({"status": result.status, "steps": result.steps_done, "run_dir": str(result.run_dir)}))


@app.command()
def rollout(
    config: Annotated[Path, typer.Argument(help="Run spec (.toml or .yaml)")],
    output_dir: Annotated[Path | None, typer.Option(help="Run directory (overrides logging.output_dir)")] = None,
    num_tasks: Annotated[int | None, typer.Option(help="Tasks per step (default: rollout.prompts_per_step)")] = None,
    steps: Annotated[int, typer.Option(help="Rollout steps to collect (the sampler walks on, as in training)")] = 1,
    set_: SetOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Collect rollouts with the current policy (no update), laid out like a training run's steps.

    Writes trajectories/step_XXXXX.jsonl, metrics.jsonl and config.resolved.json under the run directory
    and prints the last step's metrics as JSON.
    """
    from worker.rl.training.rollout_run import run_rollouts

    _setup_logging(verbose)
    edits = [*(set_ or []), f"optim.total_steps={steps}"]
    if num_tasks is not None:
        edits.append(f"rollout.prompts_per_step={num_tasks}")
    cfg = _load(config, edits, output_dir)
    r = cfg.rollout
    try:
        with console.status(f"rolling out {steps} step(s) of {r.prompts_per_step} tasks × {r.group_size}…"):
            result = run_rollouts(cfg, run_dir=Path(cfg.logging.output_dir))
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    print(json.dumps(result.final_metrics, indent=2, sort_keys=True))


@trajectories_app.command("check")
def check(file: Annotated[Path, typer.Argument(help="A trajectories JSONL file")]) -> None:
    """Check every record's invariants; exit 1 when any problem is found."""
    from worker.rl.trajectories import check_file

    if not file.is_file():
        console.print(f"[red]error:[/red] {file} does not exist")
        raise typer.Exit(2)
    report = check_file(file)
    for problem in report.problems:
        print(problem)
    print(f"{report.num_records} records, {len(report.problems)} problems")
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
