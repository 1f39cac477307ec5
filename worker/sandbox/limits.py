"""What user code may use (`SandboxLimits`), what a call gives back (`SandboxResult`), and the sandbox's errors.

One frozen dataclass carries every limit the sandbox enforces, plus the two host settings
that decide *how* it isolates (the bubblewrap binary, and the explicit opt-in to run
without isolation), so a pool, a one-shot call and the tests all read the same values.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from backend.hosts import parse_host_entry

MIB = 1024 * 1024


class SandboxUnavailable(RuntimeError):
    """No isolation layer on this host, and running user code without one was not accepted."""


class ToolLoadError(ValueError):
    """The user source could not be loaded in the sandbox (syntax error, missing function, import failure...)."""


class _SandboxSettings(Protocol):
    tool_time_limit_s: float
    tool_memory_limit_mb: int
    bwrap_path: str
    allow_unsandboxed_code: bool
    tool_network_allow_private: bool


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed process (a tool server, or a one-shot call) and how it is isolated."""

    time_limit_s: float = 10.0
    """Wall-clock seconds one call may take; past it the process (whole namespace) is killed and restarted."""
    memory_limit_mb: int = 512
    """Address-space cap (RLIMIT_AS) of the sandboxed interpreter, in MiB."""
    cpu_time_limit_s: int = 600
    """CPU seconds one sandboxed process may use over its life (RLIMIT_CPU); a server near it is recycled."""
    max_processes: int = 32
    """Processes and threads the sandboxed user may run at once (RLIMIT_NPROC under an unprivileged uid)."""
    max_open_files: int = 64
    """Open file descriptors (RLIMIT_NOFILE)."""
    max_file_size_mb: int = 16
    """Largest file the code may write (RLIMIT_FSIZE); its captured stdout is bounded by it too."""
    scratch_size_mb: int = 64
    """Size of the private tmpfs scratch dir (the working directory), gone when the process ends."""
    result_limit_bytes: int = 256 * 1024
    """A tool result longer than this (UTF-8 bytes of the text / JSON) is truncated with a visible marker."""
    stdout_limit_bytes: int = 64 * 1024
    """What the code prints (stdout and stderr) is kept up to this many bytes per call."""
    argument_limit_bytes: int = 8 * MIB
    """Largest call arguments (as JSON) sent to the code; a reward function's trajectory counts here."""
    sandbox_uid: int = 65534
    """The unprivileged uid (and gid) user code runs as when the worker is root (`nobody`)."""
    bwrap_path: str = "bwrap"
    """The bubblewrap binary (Debian package `bubblewrap`); a name is looked up on PATH."""
    allow_unsandboxed: bool = False
    """Accept running user code as a plain limited subprocess when bubblewrap is unavailable (not isolated)."""
    network_allow_private: bool = False
    """Let an allow-listed host resolve to a loopback, private or link-local address (off: only public ones)."""

    def __post_init__(self) -> None:
        if self.time_limit_s <= 0:
            raise ValueError("time_limit_s must be > 0 (e.g. 10)")
        if self.memory_limit_mb < 64:
            raise ValueError("memory_limit_mb must be >= 64; the interpreter and the server need ~30 MiB")
        minimums = {
            "cpu_time_limit_s": 1,
            "max_processes": 4,
            "max_open_files": 16,
            "max_file_size_mb": 1,
            "scratch_size_mb": 1,
            "result_limit_bytes": 256,
            "stdout_limit_bytes": 0,
            "argument_limit_bytes": 1024,
        }
        for name, low in minimums.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not self.bwrap_path:
            raise ValueError("bwrap_path must name the bubblewrap binary, e.g. 'bwrap'")

    @classmethod
    def from_settings(cls, settings: _SandboxSettings) -> SandboxLimits:
        """The studio's configured limits (`STUDIO_TOOL_TIME_LIMIT_S`, `STUDIO_BWRAP_PATH`, ...)."""
        return cls(
            time_limit_s=settings.tool_time_limit_s,
            memory_limit_mb=max(64, settings.tool_memory_limit_mb),
            bwrap_path=settings.bwrap_path,
            allow_unsandboxed=settings.allow_unsandboxed_code,
            network_allow_private=settings.tool_network_allow_private,
        )

    def runner_limits(self) -> dict[str, int | float | str]:
        """The rlimits the in-sandbox runner applies to itself before it reads any user code, and the time
        limit of one item of a batch call (`item_time_s`, enforced inside by SIGALRM)."""
        return {
            "item_time_s": self.time_limit_s,
            "memory_bytes": self.memory_limit_mb * MIB,
            "cpu_s": self.cpu_time_limit_s,
            "processes": self.max_processes,
            "open_files": self.max_open_files,
            "file_size_bytes": self.max_file_size_mb * MIB,
            "result_bytes": self.result_limit_bytes,
            "stdout_bytes": self.stdout_limit_bytes,
            "result_label": size_label(self.result_limit_bytes),
        }


_MOUNT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True)
class ToolAccess:
    """What one tool may reach beyond its scratch dir. Nothing by default: no network, no files.

    `hosts` go through a filtering proxy (`worker.sandbox.proxy`); `files` are bind-mounted
    read-only at `/data/<name>` (and only they: nothing else of the data dir is visible).
    """

    hosts: tuple[str, ...] = ()
    """Allow-listed `host`, `host:port` or `*.domain[:port]` entries (a bare host means ports 80 and 443)."""
    files: tuple[tuple[str, str], ...] = ()
    """(name, host path) pairs: the file at the host path is readable, read-only, at `/data/<name>`."""

    def __post_init__(self) -> None:
        for entry in self.hosts:
            try:
                parse_host_entry(entry)
            except ValueError as exc:
                raise ValueError(f"network allow-list: {exc}") from None
        names = [name for name, _ in self.files]
        for name in names:
            if not _MOUNT_NAME.fullmatch(name) or name in (".", ".."):
                raise ValueError(f"file name {name!r} must be letters, digits, '.', '_' or '-' (it becomes /data/NAME)")
        if len(set(names)) != len(names):
            raise ValueError(f"file names must be unique, got {names}")

    @property
    def is_default(self) -> bool:
        return not self.hosts and not self.files


@dataclass(frozen=True)
class SandboxResult:
    """The outcome of one sandboxed call: a value, or an error the model (or the user) can read."""

    ok: bool
    """True when the function returned normally (and, for reward functions, returned a finite number)."""
    result: Any
    """Its JSON value (repr() when not JSON-able; a float for reward functions); None on error."""
    error: str | None
    """What went wrong: the exception, a time limit, a memory limit, a crash, a bad return value."""
    duration_s: float
    """Wall-clock seconds of the call as the caller saw it."""
    stdout: str = ""
    """What the code printed (stdout and stderr), capped at `stdout_limit_bytes`."""
    stderr: str = ""
    """The traceback of an exception, or the sandbox's own diagnostics."""
    truncated: bool = False
    """True when the result was cut at `result_limit_bytes` (the marker is in the text)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def size_label(n_bytes: int) -> str:
    """256 KiB, 1 MiB or 300 bytes: how limits are named in messages the model sees."""
    if n_bytes % MIB == 0:
        return f"{n_bytes // MIB} MiB"
    if n_bytes % 1024 == 0:
        return f"{n_bytes // 1024} KiB"
    return f"{n_bytes} bytes"
