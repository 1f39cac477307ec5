"""Host names and `host[:port]` values: one stdlib-only leaf shared by the API, the UI guard and the sandbox.

The API's Host/Origin checks, the Gradio guard and the tool network allow-lists all parse the same
`host[:port]` / `[v6]:port` strings, so they parse them here; the app may import this module
(it imports nothing of the backend), as may the worker.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Names that mean this machine's loopback interface."""
_HOSTNAME = re.compile(r"(\*\.)?([a-z0-9_]([a-z0-9_\-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_\-]{0,61}[a-z0-9_])?")


def split_host(value: str) -> tuple[str, str]:
    """`host[:port]` or `[v6]:port` -> (host lowercased, port or "")."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.removeprefix(":")
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port
    return value, ""


def is_loopback_address(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; False for wildcards (0.0.0.0, ::) and everything else."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def same_origin(origin: str, host_header: str) -> bool:
    """The Origin's host:port is the Host the request was sent to (`null` and host-less origins never are)."""
    if origin == "null":
        return False
    parts = urlsplit(origin)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host, host_port = split_host(host_header)
    return parts.hostname.lower() == host.strip("[]") and str(port) == (host_port or str(port))


def parse_host_entry(entry: str) -> tuple[str, int | None]:
    """An allow-list entry `host`, `host:port`, `*.domain[:port]` or `[v6]:port` -> (host, port or None).

    Raises ValueError saying what is wrong (a URL, a path, a bad port or a bad name).
    """
    text = entry.strip()
    if not text or "/" in text or "@" in text or any(c.isspace() for c in text):
        raise ValueError(
            f"{entry!r} is not a host[:port] (write e.g. 'api.example.com' or 'api.example.com:8443', "
            "no scheme or path)"
        )
    host, port_text = split_host(text)
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{entry!r}: {host!r} is not a host name or IP address") from None
    return host, port
