"""The bubblewrap command line user code runs under, and the check that isolation works on this host.

The sandbox sees a read-only view of /usr, /lib*, a few /etc files and the Python prefixes
(interpreter and the venv's site-packages) — nothing else of the host: no data dir, database,
Redis socket, run dirs, /root or host /proc — plus a private tmpfs scratch dir. It gets new user,
PID, network, IPC, UTS and mount namespaces and dies with its parent. RLIMIT_NPROC only binds a
uid other than root (the kernel exempts root's user), so a root worker nests two bwraps: an outer
privileged one builds the view and the PID namespace, then `setpriv` drops to an unprivileged uid
and an inner unprivileged bwrap adds the user namespace. A non-root worker needs one bwrap.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from worker.sandbox.limits import MIB, SandboxLimits, SandboxUnavailable, ToolAccess

logger = logging.getLogger(__name__)

SCRATCH = "/scratch"
"""The private writable working directory inside the sandbox (a size-capped tmpfs)."""
RUNNER_SOURCE = (Path(__file__).with_name("runner.py")).read_text(encoding="utf-8")
"""The in-sandbox server, passed with `python -c` so no repository file is visible inside."""
DATA_DIR = "/data"
"""Where a tool's declared files appear, read-only, inside its sandbox (`/data/<name>`)."""
PROXY_PORT = 3128
"""Inside a networked tool's sandbox, 127.0.0.1:3128 is bridged to the host-side filtering proxy."""
PROXY_SOCKET = "/run/studio-proxy.sock"
"""Where the proxy's unix socket is bind-mounted inside the sandbox."""
ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives")
"""The only /etc entries the interpreter needs (fast library lookup, time zone, Debian alternatives)."""
INSTALL_HINT = (
    "install Debian's `bubblewrap` package (`apt-get install bubblewrap`, or `make sandbox-deps`), "
    "or set STUDIO_ALLOW_UNSANDBOXED_CODE=1 to run user code WITHOUT isolation at your own risk"
)


def sandbox_env(access: ToolAccess | None = None) -> dict[str, str]:
    """The whole environment user code sees (and the one bwrap itself is started with: no secret in /proc)."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": SCRATCH, "TMPDIR": SCRATCH}
    if access is not None and access.files:
        env["STUDIO_TOOL_DATA"] = DATA_DIR
    if access is not None and access.hosts:
        proxy = f"http://127.0.0.1:{PROXY_PORT}"
        env.update(dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), proxy))
    return env


def access_args(access: ToolAccess | None, proxy_socket: str | None) -> list[str]:
    """Read-only binds of the tool's declared files at /data/<name> and of its proxy socket (nothing else)."""
    args: list[str] = []
    if access is not None and access.files:
        args += ["--perms", "0755", "--dir", DATA_DIR]  # parents bwrap makes are 0700: unreadable by the sandbox uid
    for name, path in access.files if access is not None else ():
        args += ["--ro-bind", path, f"{DATA_DIR}/{name}"]
    if proxy_socket is not None:
        args += ["--perms", "0755", "--dir", str(Path(PROXY_SOCKET).parent), "--ro-bind", proxy_socket, PROXY_SOCKET]
    return args


def python_roots() -> list[Path]:
    """The interpreter's prefixes (base install and venv) that the sandbox must see, outermost first."""
    candidates = {Path(p).resolve() for p in (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix)}
    candidates.add(Path(os.path.realpath(sys.executable)).parent.parent)
    roots = [p for p in sorted(candidates) if p != Path("/") and not p.is_relative_to("/usr")]
    return [p for p in roots if not any(p != q and p.is_relative_to(q) for q in roots)]


def view_args() -> list[str]:
    """Read-only binds of the system libraries, a few /etc files and the Python prefixes; /proc, /dev, /tmp."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    args += [arg for path in ETC_FILES if os.path.exists(path) for arg in ("--ro-bind", path, path)]
    made: set[Path] = set()
    for root in python_roots():
        for parent in reversed(root.parents[:-1]):  # /root, /root/.pyenv, ... readable by the sandbox uid
            if parent not in made:
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
        args += ["--ro-bind", str(root), str(root)]
    return [*args, "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]


def _scratch_args(limits: SandboxLimits) -> list[str]:
    return ["--size", str(limits.scratch_size_mb * MIB), "--perms", "1777", "--tmpfs", SCRATCH, "--chdir", SCRATCH]


def _namespace_args() -> list[str]:
    return ["--unshare-ipc", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent"]


def _env_args(access: ToolAccess | None) -> list[str]:
    env = sandbox_env(access)
    return ["--clearenv", *(arg for key, value in env.items() for arg in ("--setenv", key, value))]


def sandbox_command(
    limits: SandboxLimits,
    bwrap: str,
    argv: list[str],
    access: ToolAccess | None = None,
    proxy_socket: str | None = None,
) -> list[str]:
    """The full command running `argv` isolated (the nested form when the worker is root).

    The network namespace is always new and empty (`--unshare-net`): a tool with an allow-list
    reaches the outside only through `proxy_socket`, the host-side filtering proxy.
    """
    uid = str(limits.sandbox_uid)
    view = [*view_args(), *access_args(access, proxy_socket)]
    if os.geteuid() != 0:
        return [
            bwrap,
            "--unshare-user",
            "--unshare-pid",
            *_namespace_args(),
            "--disable-userns",
            "--new-session",
            "--uid",
            uid,
            "--gid",
            uid,
            *_env_args(access),
            *view,
            *_scratch_args(limits),
            *argv,
        ]
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SandboxUnavailable("a root worker drops to an unprivileged uid with `setpriv`: install util-linux")
    inner = [
        setpriv,
        "--reuid",
        uid,
        "--regid",
        uid,
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        bwrap,
        "--unshare-user",
        "--disable-userns",
        *_namespace_args(),
        "--uid",
        uid,
        "--gid",
        uid,
        "--ro-bind",
        "/",
        "/",
        "--dev-bind",
        "/dev",
        "/dev",
        "--bind",
        SCRATCH,
        SCRATCH,
        "--chdir",
        SCRATCH,
    ]
    return [
        bwrap,
        "--unshare-pid",
        *_namespace_args(),
        "--new-session",
        *_env_args(access),
        *view,
        *_scratch_args(limits),
        *inner,
        *argv,
    ]


def server_argv(limits: SandboxLimits, *, proxied: bool = False) -> list[str]:
    """The interpreter running the tool server (isolated mode: no PYTHON* env, no user site, no cwd on path).

    `proxied`: the server first bridges 127.0.0.1:PROXY_PORT to the proxy socket (before any user code).
    """
    runner: dict[str, object] = dict(limits.runner_limits())
    if proxied:
        runner.update(proxy_port=PROXY_PORT, proxy_socket=PROXY_SOCKET)
    return [sys.executable, "-I", "-c", RUNNER_SOURCE, json.dumps(runner)]


@functools.cache
def _probe(bwrap: str, euid: int, sandbox_uid: int) -> str | None:
    """None when an isolated interpreter starts here, else why not (bwrap's own message)."""
    del euid  # part of the cache key: the command differs for root
    limits = SandboxLimits(sandbox_uid=sandbox_uid)
    probe = (
        "import os, socket\ntry:\n    socket.create_connection(('10.255.255.1', 9), timeout=1)\n"
        "    print('the network is reachable')\nexcept OSError:\n"
        "    print('isolated' if os.getpid() < 10 else 'no PID namespace')"
    )
    try:
        done = subprocess.run(
            sandbox_command(limits, bwrap, [sys.executable, "-I", "-c", probe]),
            capture_output=True,
            text=True,
            timeout=60,
            env=sandbox_env(),
        )
    except (OSError, subprocess.TimeoutExpired, SandboxUnavailable) as exc:
        return str(exc)
    if done.stdout.strip() == "isolated":
        return None  # the interpreter ran, in its own PID namespace, and the network is unreachable
    return (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}")[-800:]


def isolation_mode(limits: SandboxLimits) -> str:
    """'bwrap' when user code can run isolated here, 'unsandboxed' when that was explicitly accepted; else raise."""
    bwrap = shutil.which(limits.bwrap_path)
    problem = f"bubblewrap was not found at {limits.bwrap_path!r}" if bwrap is None else None
    if bwrap is not None:
        failure = _probe(bwrap, os.geteuid(), limits.sandbox_uid)
        problem = f"bubblewrap ({bwrap}) cannot isolate user code on this host: {failure}" if failure else None
    if problem is None:
        return "bwrap"
    if limits.allow_unsandboxed:
        logger.warning(
            "%s; running user code WITHOUT isolation (a limited subprocess) because "
            "STUDIO_ALLOW_UNSANDBOXED_CODE is set: it can read what the worker can read",
            problem,
        )
        return "unsandboxed"
    raise SandboxUnavailable(f"refusing to run user code: {problem}. To fix, {INSTALL_HINT}")
