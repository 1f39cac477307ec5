"""`LocalToolRunner`: runs an environment file's inlined tool and reward sources in this process.

For `python -m worker.rl.cli train` / `studio train` with `task.environment`: the user runs their own
code on their own machine, like any Python script. The studio's workers never use this; they pass
their sandboxed tool-server client as the tool runner instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.rl.envs.spec import EnvSpec, SpecError


@dataclass(frozen=True)
class LocalOutcome:
    ok: bool
    result: Any
    error: str | None


class LocalToolRunner:
    """`runner(key, arguments)` over functions compiled once from their sources."""

    def __init__(self, functions: dict[str, Callable[..., Any]]) -> None:
        self._functions = dict(functions)

    @classmethod
    def from_spec(cls, spec: EnvSpec) -> LocalToolRunner:
        functions: dict[str, Callable[..., Any]] = {}
        entries = [(t.key, t.source, t.function or t.name, f"tools.{t.name}") for t in spec.user_tools]
        entries += [(r.key, r.source, r.function or "reward", f"rubric.{r.name}") for r in spec.user_rewards]
        for key, source, function, where in entries:
            if not source.strip():
                raise SpecError(f"{where}: the environment file has no source for it; export it with sources inlined")
            namespace: dict[str, Any] = {"__name__": f"studio_user_{key}"}
            try:
                exec(compile(source, f"<{where}>", "exec"), namespace)
            except SyntaxError as exc:
                raise SpecError(f"{where}: the source does not compile: {exc}") from exc
            fn = namespace.get(function)
            if not callable(fn):
                raise SpecError(f"{where}: the source defines no function {function!r}")
            functions[str(key)] = fn
        return cls(functions)

    def call_batch(self, key: str, items: list[dict[str, Any]]) -> list[LocalOutcome]:
        """One outcome per item (in-process, so a batch is just a loop)."""
        return [self(key, item) for item in items]

    def __call__(self, key: str, arguments: dict[str, Any]) -> LocalOutcome:
        fn = self._functions.get(key)
        if fn is None:
            return LocalOutcome(False, None, f"no function registered under {key!r}")
        try:
            return LocalOutcome(True, fn(**arguments), None)
        except Exception as exc:  # a user function's failure is an outcome, never a crash
            return LocalOutcome(False, None, f"{type(exc).__name__}: {exc}")
