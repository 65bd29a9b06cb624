"""The dashboard's guard as plain functions: which hosts are loopback, which origins are ours, CSRF tokens."""

from __future__ import annotations

import pytest

from flywheel.ui.security import Guard, is_loopback, same_origin


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "localhost", "LOCALHOST", "::1", "[::1]"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.org", ""])
def test_everything_else_is_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_off_loopback_a_guard_needs_a_token() -> None:
    with pytest.raises(ValueError, match="needs a token"):
        Guard.for_bind("0.0.0.0", 8765, None)
    guard = Guard.for_bind("0.0.0.0", 8765, "s3cret-token")
    assert guard.allowed_hosts is None  # any Host: the token protects
    assert guard.token_matches("s3cret-token") and not guard.token_matches("s3cret") and not guard.token_matches(None)


def test_on_loopback_only_our_own_names_and_port_are_answered() -> None:
    guard = Guard.for_bind("127.0.0.1", 8765, None)
    assert guard.allowed_hosts is not None
    assert {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"} <= guard.allowed_hosts
    assert "evil.example:8765" not in guard.allowed_hosts and "127.0.0.1:9999" not in guard.allowed_hosts
    assert not guard.token_matches("anything")  # no token configured: none matches


def test_csrf_tokens_belong_to_one_session_of_one_server() -> None:
    one, two = Guard.for_bind("127.0.0.1", 1, None), Guard.for_bind("127.0.0.1", 1, None)
    assert one.csrf_for("session-a") == one.csrf_for("session-a")
    assert one.csrf_for("session-a") != one.csrf_for("session-b")
    assert one.csrf_for("session-a") != two.csrf_for("session-a")  # a restart invalidates old pages


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        ("http://127.0.0.1:8765", "127.0.0.1:8765", True),
        ("http://127.0.0.1:8765/runs/1", "127.0.0.1:8765", True),  # a Referer
        ("http://127.0.0.1:9999", "127.0.0.1:8765", False),
        ("http://evil.example", "127.0.0.1:8765", False),
        ("null", "127.0.0.1:8765", False),
        ("", "127.0.0.1:8765", False),
        ("file:///tmp/x.html", "127.0.0.1:8765", False),
    ],
)
def test_same_origin(origin: str, host: str, ok: bool) -> None:
    assert same_origin(origin, host) is ok
