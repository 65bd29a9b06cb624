"""Who may use the dashboard, and which requests may change anything.

The dashboard can start a resume, which runs jobs with the operator's credentials, so:

- **Off loopback a token is required** on every request: an `Authorization: Bearer` or `X-Flywheel-Token`
  header, the cookie the dashboard sets, or `?token=` once (the dashboard then sets the cookie and
  redirects to the same page without it, so the token does not linger in history or in links).
- **On loopback the Host header is checked** (only `127.0.0.1`, `localhost` and `[::1]` on our port):
  a page on another site cannot reach a local server by pointing its own DNS name at 127.0.0.1.
- **Every POST must come from our own pages**: its Origin (or Referer) must be this server, and it must
  carry the CSRF token of its session (an HMAC of the session cookie under a per-process secret) in
  the `X-CSRF-Token` header. Cookies are `HttpOnly` and `SameSite=Strict`.
- Every response says `frame-ancestors 'none'` (no clickjacking of the Resume button), allows scripts
  from this origin only, and is never cached (pages carry the CSRF token).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_HEADER = "x-csrf-token"
TOKEN_HEADER = "x-flywheel-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)


def is_loopback(host: str) -> bool:
    """`127.0.0.1`, `::1`, `localhost` and the rest of 127.0.0.0/8; not `0.0.0.0` (every interface)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Guard:
    """The checks for one server: its token (if any), its CSRF secret and the Host values it answers to."""

    token: str | None
    secret: bytes
    allowed_hosts: frozenset[str] | None  # None: any Host (off loopback, where the token protects)

    @classmethod
    def for_bind(cls, host: str, port: int, token: str | None) -> Guard:
        """The guard for a server bound to `host:port`. Off loopback a token is mandatory."""
        if not is_loopback(host) and not token:
            raise ValueError(f"serving on {host} needs a token")
        allowed: frozenset[str] | None = None
        if is_loopback(host):
            names = {"127.0.0.1", "localhost", "[::1]", host if ":" not in host else f"[{host.strip('[]')}]"}
            allowed = frozenset(f"{name}:{port}".lower() for name in names) | frozenset(n.lower() for n in names)
        return cls(token=token or None, secret=secrets.token_bytes(32), allowed_hosts=allowed)

    def csrf_for(self, session_id: str) -> str:
        return hmac.new(self.secret, session_id.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, provided: str | None) -> bool:
        return bool(self.token and provided and hmac.compare_digest(provided.encode(), self.token.encode()))


def same_origin(origin: str, host: str) -> bool:
    """Whether an Origin (or a Referer) names the host that received the request."""
    if not origin or origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class GuardMiddleware:
    """Applies a `Guard` to every HTTP request before any route sees it (routes cannot forget a check)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        port = scope["server"][1] if scope.get("server") else 0
        session_cookie, token_cookie = f"flywheel_session_{port}", f"flywheel_token_{port}"
        cookies = _cookies(headers.get("cookie", ""))
        set_cookies: list[str] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                extra += [(b"set-cookie", c.encode()) for c in set_cookies]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        async def deny(status: int, text: str) -> None:
            await PlainTextResponse(text, status_code=status)(scope, receive, send_with_headers)

        host = headers.get("host", "")
        if self.guard.allowed_hosts is not None and host.lower() not in self.guard.allowed_hosts:
            await deny(400, f"unexpected Host header {host!r}: open the dashboard at the address it printed")
            return

        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if self.guard.token:
            bearer = headers.get("authorization", "")
            offered = [
                bearer[7:] if bearer.lower().startswith("bearer ") else None,
                headers.get(TOKEN_HEADER),
                cookies.get(token_cookie),
            ]
            if not any(self.guard.token_matches(t) for t in offered):
                if not self.guard.token_matches(query.get("token")):
                    await deny(401, "a token is required: open the URL `flywheel ui` printed, or send it as a header")
                    return
                set_cookies.append(_cookie(token_cookie, self.guard.token))
                if scope["method"] == "GET":  # drop it from the address bar and history
                    rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
                    target = scope.get("path", "/") + (f"?{rest}" if rest else "")
                    await RedirectResponse(target, status_code=303)(scope, receive, send_with_headers)
                    return

        session = cookies.get(session_cookie) or ""
        if len(session) < 16:
            session = secrets.token_urlsafe(18)
            set_cookies.append(_cookie(session_cookie, session))
        csrf = self.guard.csrf_for(session)
        scope["flywheel.csrf"] = csrf

        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin") or headers.get("referer") or ""
            if not same_origin(origin, host):
                await deny(403, "cross-site request refused: the Origin is not this dashboard")
                return
            offered_csrf = headers.get(CSRF_HEADER, "")
            if not offered_csrf or not hmac.compare_digest(offered_csrf.encode(), csrf.encode()):
                await deny(403, "missing or wrong CSRF token: reload the page and try again")
                return
        await self.app(scope, receive, send_with_headers)


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is treated as no cookie
        return {}
    return {k: v.value for k, v in jar.items()}


def _cookie(name: str, value: str) -> str:
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Strict"


def csrf_of(scope: Scope) -> str:
    """The CSRF token of the request's session, for the page to send back with its POSTs."""
    return str(scope.get("flywheel.csrf", ""))


_MASKED_TYPES = (b"text/html", b"text/plain", b"application/json")


class RedactingMiddleware:
    """Masks secret values in every page, partial and JSON answer, whatever route or template made it.

    One place for the dashboard: pages render journaled text (older runs journaled before masking),
    log excerpts and job output, and a route added later cannot forget the mask. Answers of a known
    length are masked whole; a streamed answer (the live events, a whole log) is never held in memory
    here, so its route masks each line as it goes. Static files are flywheel's own.
    """

    def __init__(self, app: ASGIApp, redactor: Callable[[], Callable[[str], str]]) -> None:
        self.app = app
        self.redactor = redactor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith("/static/"):
            await self.app(scope, receive, send)
            return
        started: Message | None = None
        passing = False
        body: list[bytes] = []

        async def masked(message: Message) -> None:
            nonlocal started, passing
            if message["type"] == "http.response.start":
                named = dict(message.get("headers", []))
                kind = named.get(b"content-type", b"")
                passing = not kind.startswith(_MASKED_TYPES) or b"content-length" not in named
                if passing:
                    await send(message)
                else:
                    started = message
                return
            if passing or message["type"] != "http.response.body" or started is None:
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            text = self.redactor()(b"".join(body).decode("utf-8", "replace")).encode()
            kept = [(k, v) for k, v in started.get("headers", []) if k.lower() != b"content-length"]
            await send({**started, "headers": [*kept, (b"content-length", str(len(text)).encode())]})
            await send({"type": "http.response.body", "body": text})

        await self.app(scope, receive, masked)
