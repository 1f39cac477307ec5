"""The Host/Origin rules both guards (API and UI) use: one table of cases."""

from __future__ import annotations

import pytest

from backend.hosts import is_loopback_address, same_origin, split_host


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", "8000")),
        ("LocalHost", ("localhost", "")),
        ("[::1]:7860", ("::1", "7860")),
        ("[::1]", ("::1", "")),
        ("::1", ("::1", "")),
        ("studio.example.org:443", ("studio.example.org", "443")),
    ],
)
def test_split_host(header: str, parsed: tuple[str, str]) -> None:
    assert split_host(header) == parsed


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("localhost.evil.example", False),
    ],
)
def test_is_loopback_address(host: str, loopback: bool) -> None:
    assert is_loopback_address(host) is loopback


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://127.0.0.1:7860", "127.0.0.1:7860", True),
        ("http://127.0.0.1:7860", "127.0.0.1:8000", False),
        ("http://localhost", "localhost:80", True),
        ("https://studio.example.org", "studio.example.org", True),
        ("http://[::1]:7860", "[::1]:7860", True),
        ("http://evil.example", "127.0.0.1:7860", False),
        ("null", "127.0.0.1:7860", False),
        ("not a url", "127.0.0.1", False),
    ],
)
def test_same_origin(origin: str, host: str, allowed: bool) -> None:
    assert same_origin(origin, host) is allowed
