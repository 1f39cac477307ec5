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
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run RL training from a config file."""
    from worker.rl.training.trainer import train as run_training

    _setup_logging(verbose)
    cfg = _load(config, set_, output_dir)
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
    output_dir: Annotated[Path | None, typer.Option(help="Where to write trajectories.jsonl and summary.json")] = None,
    num_tasks: Annotated[int | None, typer.Option(help="Tasks to roll out (default: rollout.prompts_per_step)")] = None,
    set_: SetOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Collect rollouts with the current policy (no update); write trajectories and a summary."""
    from worker.rl.generation.base import SamplingParams
    from worker.rl.rollout import collect_trajectories
    from worker.rl.training.build import build_components
    from worker.rl.training.metrics import reward_metrics, rollout_metrics
    from worker.rl.training.trainer import rollout_limits
    from worker.rl.trajectories import write_jsonl

    _setup_logging(verbose)
    cfg = _load(config, set_, output_dir)
    out = Path(cfg.logging.output_dir)
    try:
        comps = build_components(cfg)
    except ValueError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    tasks = comps.train_tasks[: num_tasks or cfg.rollout.prompts_per_step]
    r = cfg.rollout
    params = SamplingParams(
        max_new_tokens=r.max_new_tokens_per_turn, temperature=r.temperature, top_p=r.top_p, seed=cfg.seed
    )
    with console.status(f"rolling out {len(tasks)} tasks × {r.group_size}…"):
        batch = collect_trajectories(
            comps.env_factory, comps.generator, comps.chat, tasks, group_size=r.group_size, params=params,
            limits=rollout_limits(cfg), seed=cfg.seed,
        )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "trajectories.jsonl", batch.trajectories)
    summary = {**reward_metrics(batch.trajectories), **rollout_metrics(batch.trajectories), **batch.stats.metrics()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True), encoding="utf-8")
    print(json.dumps(summary, indent=2, sort_keys=True))


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
