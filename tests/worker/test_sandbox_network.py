"""Per-tool network allow-lists and read-only file mounts, with real sandboxes, servers and proxies (issue #12).

A tool keeps its own empty network namespace; its only way out is the host-side filtering proxy
(`worker.sandbox.proxy`) over a bind-mounted unix socket. Declared files appear read-only at
/data/<name>, and nothing else of the data dir does.
"""

from __future__ import annotations

import http.server
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from backend.core.config import Settings
from backend.hosts import parse_host_entry
from worker.sandbox.limits import SandboxLimits, ToolAccess, ToolLoadError
from worker.sandbox.pool import ToolServerPool
from worker.sandbox.proxy import AllowList
from worker.tool_runner import tool_access

LIMITS = SandboxLimits(time_limit_s=10.0, memory_limit_mb=256, network_allow_private=True)
NET_TOOLS = textwrap.dedent(
    '''\
    def fetch(url: str) -> str:
        """urllib through HTTP_PROXY (plain HTTP)."""
        import urllib.error, urllib.request
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}: {exc.read().decode()}"
        except OSError as exc:
            return f"ERR {exc}"

    def tunnel(host: str, port: int) -> str:
        """An HTTP request inside a CONNECT tunnel (what HTTPS clients do)."""
        import http.client, os
        proxy = os.environ["HTTPS_PROXY"].removeprefix("http://")
        conn = http.client.HTTPConnection(*proxy.split(":"), timeout=5)
        conn.set_tunnel(host, port)
        try:
            conn.request("GET", "/tunnelled")
            return conn.getresponse().read().decode()
        except OSError as exc:
            return f"ERR {exc}"

    def direct(host: str, port: int) -> str:
        """A plain socket, bypassing the proxy."""
        import socket
        try:
            socket.create_connection((host, port), timeout=2).close()
            return "connected"
        except OSError as exc:
            return f"ERR {type(exc).__name__}"

    def environment() -> dict:
        import os
        return {k: v for k, v in os.environ.items() if "proxy" in k.lower()}
    '''
)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.server.server_address[1]}{self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def web_servers() -> Iterator[tuple[int, int]]:
    """Two HTTP servers on the host's 127.0.0.1: one to allow-list, one not."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers[0].server_address[1], servers[1].server_address[1]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_allow_listed_host_is_reachable_others_refused_and_direct_sockets_fail(web_servers: tuple[int, int]) -> None:
    allowed, other = web_servers
    access = ToolAccess(hosts=(f"localhost:{allowed}",))
    with ToolServerPool(LIMITS, processes=1) as pool:
        for name in ("fetch", "tunnel", "direct"):
            pool.add_tool(name, NET_TOOLS, name, access)
        pool.add_tool("offline", NET_TOOLS, "environment")  # no access: no proxy at all

        def call(key: str, **arguments: object) -> str:
            result = pool.call(key, arguments)
            assert result.ok, result.error
            return str(result.result)

        assert call("fetch", url=f"http://localhost:{allowed}/page") == f"hello from {allowed}/page"
        assert call("tunnel", host="localhost", port=allowed) == f"hello from {allowed}/tunnelled"
        refused = call("fetch", url=f"http://localhost:{other}/page")
        assert refused.startswith(f"HTTP 403: localhost:{other} is not on this tool's network allow-list")
        assert "Tool network" in refused  # says where to fix it
        assert call("fetch", url=f"http://127.0.0.1:{allowed}/").startswith("HTTP 403")  # by name only
        assert "Forbidden" in call("tunnel", host="localhost", port=other)
        for host, port in (("127.0.0.1", allowed), ("127.0.0.1", other), ("10.255.255.1", 80)):
            assert call("direct", host=host, port=port).startswith("ERR")  # no route but the proxy
        assert call("offline") == "{}"
        assert pool.stats("fetch").errors == 0


def test_private_addresses_are_refused_unless_the_worker_allows_them(web_servers: tuple[int, int]) -> None:
    allowed, _other = web_servers
    strict = SandboxLimits(time_limit_s=10.0, memory_limit_mb=256)  # the default: public addresses only
    with ToolServerPool(strict, processes=1) as pool:
        pool.add_tool("fetch", NET_TOOLS, "fetch", ToolAccess(hosts=(f"localhost:{allowed}",)))
        result = pool.call("fetch", {"url": f"http://localhost:{allowed}/"})
    assert result.ok, result.error
    assert result.result.startswith("HTTP 403: localhost resolves to 127.0.0.1, not a public address")
    assert "STUDIO_TOOL_NETWORK_ALLOW_PRIVATE=1" in result.result


def test_declared_files_are_mounted_read_only_and_nothing_else_of_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "datasets").mkdir(parents=True)
    table = data / "datasets" / "prices-0a1b.jsonl"
    table.write_text('{"item": "tea", "price": 3}\n')
    (data / "datasets" / "other-upload.jsonl").write_text("private\n")
    (data / "studio.db").write_text("database")
    source = textwrap.dedent(
        """\
        def probe(data_dir: str) -> dict:
            import os
            out = {"listing": sorted(os.listdir("/data")), "env": os.environ.get("STUDIO_TOOL_DATA")}
            out["table"] = open("/data/prices.jsonl").read()
            for name, action in (("write", lambda: open("/data/prices.jsonl", "a").write("x")),
                                 ("create", lambda: open("/data/new.txt", "w").write("x")),
                                 ("remove", lambda: os.remove("/data/prices.jsonl"))):
                try:
                    action()
                    out[name] = "done"
                except OSError as exc:
                    out[name] = type(exc).__name__
            out["host_data_dir"] = os.path.exists(data_dir)
            return out
        """
    )
    with ToolServerPool(LIMITS, processes=1) as pool:
        pool.add_tool("probe", source, "probe", ToolAccess(files=(("prices.jsonl", str(table)),)))
        result = pool.call("probe", {"data_dir": str(data)})
    assert result.ok, result.error
    seen = result.result
    assert seen["listing"] == ["prices.jsonl"]
    assert seen["env"] == "/data"
    assert seen["table"] == '{"item": "tea", "price": 3}\n'
    assert seen["write"] in ("PermissionError", "OSError")
    assert seen["create"] != "done"
    assert seen["remove"] != "done"
    assert seen["host_data_dir"] is False
    assert table.read_text() == '{"item": "tea", "price": 3}\n'


def test_the_worker_refuses_to_mount_studio_state_or_files_outside_the_data_roots(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "datasets").mkdir(parents=True)
    (data / "studio.db").write_text("database")
    upload = data / "datasets" / "table.jsonl"
    upload.write_text("{}\n")
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    settings = Settings(data_dir=data)

    def tool(**files: str) -> SimpleNamespace:
        return SimpleNamespace(name="lookup", network=("api.example.com",), files=files)

    access = tool_access(tool(**{"table.jsonl": str(upload)}), settings)
    assert access.files == (("table.jsonl", str(upload.resolve())),)
    for path, message in (
        (data / "studio.db", "is studio state"),
        (outside, "outside the data roots"),
        (data / "datasets" / "gone.jsonl", "not an existing file"),
    ):
        with pytest.raises(ToolLoadError, match=message):
            tool_access(tool(x=str(path)), settings)
    with pytest.raises(ToolLoadError, match=r"network allow-list: 'https://api\.example\.com' is not a host"):
        tool_access(SimpleNamespace(name="lookup", network=("https://api.example.com",), files={}), settings)


def test_allow_list_entries() -> None:
    rules = AllowList(["api.example.com", "*.rates.example.org:8443", "[::1]:9000", "10.0.0.5:6379"])
    assert rules.allows("API.example.com", 443)
    assert rules.allows("api.example.com", 80)
    assert not rules.allows("api.example.com", 8080)  # a bare host means 80 and 443 only
    assert not rules.allows("evil-api.example.com", 443)
    assert not rules.allows("api.example.com.evil.net", 443)
    assert rules.allows("eu.rates.example.org", 8443)
    assert not rules.allows("rates.example.org", 8443)
    assert rules.allows("::1", 9000)
    assert rules.allows("10.0.0.5", 6379)
    assert not rules.allows("10.0.0.5", 6380)
    assert parse_host_entry("Example.COM:8080") == ("example.com", 8080)
    for bad in ("http://example.com", "example.com/path", "user@example.com", "example.com:0", "exa mple.com", ""):
        with pytest.raises(ValueError, match=r"is not a host|port must be"):
            parse_host_entry(bad)
    with pytest.raises(ValueError, match=r"file name '\.\./etc' must be"):
        ToolAccess(files=(("../etc", "/etc/passwd"),))


def test_without_a_sandbox_the_files_are_linked_where_studio_tool_data_says(tmp_path: Path) -> None:
    table = tmp_path / "table.jsonl"
    table.write_text("row\n")
    source = "def probe() -> str:\n    import os\n    return open(os.environ['STUDIO_TOOL_DATA'] + '/t.jsonl').read()\n"
    opted_in = SandboxLimits(bwrap_path="no-such-bwrap", allow_unsandboxed=True)  # the explicit, logged opt-in
    with ToolServerPool(opted_in, processes=1) as pool:
        assert pool.mode == "unsandboxed"
        pool.add_tool("probe", source, "probe", ToolAccess(files=(("t.jsonl", str(table)),)))
        result = pool.call("probe", {})
    assert result.ok, result.error
    assert result.result == "row\n"
