"""Docker cannot run on the development machines: keep Dockerfile and compose.yml honest by parsing them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from studio.cli import app as studio_app

REPO = Path(__file__).resolve().parents[1]


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\w+)", line, flags=re.IGNORECASE)
        if match:
            current = match.group(1)
            stages[current] = []
        elif current:
            stages[current].append(line)
    return stages


def _studio_commands() -> set[str]:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in studio_app.registered_commands}
    return names | {g.name for g in studio_app.registered_groups if g.name}


def test_dockerfile_targets_and_copied_paths_exist() -> None:
    stages = _stages()
    assert {"base", "web", "worker"} <= stages.keys()
    for lines in stages.values():
        for line in lines:
            if line.startswith("COPY"):
                sources = line.split()[1:-1]
                for source in sources:
                    assert (REPO / source).exists(), f"Dockerfile copies missing path {source}"
    web = "\n".join(stages["web"])
    assert "torch" not in web
    assert ".[api,ui]" in web
    assert ".[api,worker]" in "\n".join(stages["worker"])


def test_web_image_holds_every_core_module_the_api_and_ui_import() -> None:
    """The web stage copies only the RL core's torch-free leaves: exactly those backend/app reach in the graph."""
    import grimp

    graph = grimp.build_graph("app", "backend", "worker", "studio")
    needed = set()
    for package in ("app", "backend"):
        needed |= {m for m in graph.find_upstream_modules(package, as_package=True) if m.startswith("worker.")}
    copied = set()
    for line in _stages()["web"]:
        if line.startswith("COPY"):
            copied |= {src for src in line.split()[1:-1] if src.endswith(".py")}
    for module in sorted(needed):
        path = module.replace(".", "/") + ".py"
        assert path in copied, f"the web image imports {module} but the Dockerfile's web stage does not copy {path}"
        parts = module.split(".")
        for i in range(1, len(parts)):
            init = "/".join(parts[:i]) + "/__init__.py"
            assert init in copied, f"the web image needs {init} (package of {module})"


def test_compose_services_use_real_targets_and_commands() -> None:
    compose = yaml.safe_load((REPO / "compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "api", "ui", "worker"} <= services.keys()
    stages = _stages()
    commands = _studio_commands()
    for name in ("api", "ui", "worker"):
        build = services[name]["build"]
        assert build["target"] in stages, f"{name} builds unknown target {build['target']}"
        command = services[name].get("command")
        if command:
            assert command[0] == "studio"
            assert command[1] in commands
        env = services[name]["environment"]
        assert env["STUDIO_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["STUDIO_REDIS_URL"].startswith("redis://")
    assert "ui" in commands
    assert "worker" in commands
