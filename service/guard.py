"""The ASGI layer ahead of routing: the Host and Origin checks (no token), the token (every route but /healthz and the
page /), the size of the body and whether an upload's route has room for it (jobs, photos), decided before a byte of
the body is read; the body is then counted as it arrives (chunked too)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vidparse.service.errors import ApiError, error_response
from vidparse.service.uploads import MB, too_large

# The page holds no data (it asks the API for everything, with the token): a reload, where the token is no longer
# in the address, must find it, and the token it kept in the tab's sessionStorage.
OPEN_PATHS = ("/healthz", "/")
# GETs a browser makes without headers (<img>, <video>, download links): the only ones ?token= may pass.
BROWSER_LINKS = re.compile(r"/v1/streams/[0-9a-f]+/(preview\.mjpg|snapshot\.jpg)"
                           r"|/v1/jobs/[0-9a-f]+/(result|masks\.zip|stats\.jsonl)")
UPLOAD_ROUTES = ("/v1/images", "/v1/jobs")
JSON_BODY_LIMIT = 64 * 1024  # any body but an upload
MULTIPART_OVERHEAD = 64 * 1024  # an upload's part headers and boundaries
LOCAL_HOST_NAMES = ("localhost", "127.0.0.1", "[::1]")


class BodyTooLarge(Exception):
    """Raised into the app from ``receive`` once the body passes its limit."""


@dataclass(frozen=True)
class GuardSettings:
    token: str | None
    max_upload_mb: int
    # By POST route: its 429 while it has no room (too many jobs, photos), None while it has. The route still
    # checks when it takes its place; this answers before the body is read (a full queue wasted the whole upload).
    no_room: Mapping[str, Callable[[], ApiError | None]] = field(default_factory=dict)


def host_name(host_header: str) -> str:
    """The name or address of a Host header, without its port (``[::1]:8000`` -> ``[::1]``)."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def is_local_host(host_header: str) -> bool:
    name = host_name(host_header.strip().lower())
    return name in LOCAL_HOST_NAMES or re.fullmatch(r"127(\.\d{1,3}){3}", name) is not None


def _port(scheme: str, netloc: str) -> int | None:
    """The port of ``scheme://netloc``, its scheme's own where none is written; None when it cannot be read."""
    try:
        return urlsplit(f"{scheme}://{netloc}").port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return None


def is_own_page(origin: str, host_header: str) -> bool:
    """Whether an Origin is a page of this server: a loopback name, on the port the request came to (another local
    web app, a dev server or a notebook on another port, is another site)."""
    page = urlsplit(origin)
    return is_local_host(page.netloc) and _port(page.scheme, page.netloc) == _port("http", host_header)


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings

    def refusal(self, method: str, path: str, headers: Headers, query: QueryParams) -> ApiError | None:
        """Why this request is refused before its body is read (None: it may go on)."""
        token = self.settings.token
        if token is None:
            # Without a token the server binds to loopback; a page of another origin resolving its own name to
            # 127.0.0.1 (DNS rebinding) still sends its own name as Host, and a page of another origin posting
            # to 127.0.0.1 (blind CSRF) sends its own Origin.
            if not is_local_host(headers.get("host", "")):
                return ApiError(403, "this Host is not served", "without --token, open the server as 127.0.0.1 "
                                "or localhost")
            origin = headers.get("origin")
            if origin is not None and not is_own_page(origin, headers.get("host", "")):
                return ApiError(403, "requests from another site's pages are refused", "without --token, only "
                                "this server's own page (127.0.0.1 or localhost, on its port) may call the API")
            return None
        if path in OPEN_PATHS:
            return None
        header = headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        if given is None and method in ("GET", "HEAD") and BROWSER_LINKS.fullmatch(path):
            given = query.get("token")
        if given is None or not secrets.compare_digest(given.encode(), token.encode()):
            return ApiError(401, "missing or wrong token", "send 'Authorization: Bearer TOKEN' (?token= only on "
                            "previews' and downloads' GET links; the page takes it as /?token=TOKEN)",
                            headers={"WWW-Authenticate": "Bearer"})
        return None

    def body_limit(self, method: str, path: str, headers: Headers) -> tuple[int, ApiError]:
        """The most bytes this request's body may hold, and the answer past it."""
        upload = method == "POST" and path in UPLOAD_ROUTES and headers.get("content-type", "").lower().startswith(
            "multipart/form-data")
        if upload:
            limit_mb = self.settings.max_upload_mb
            return limit_mb * MB + MULTIPART_OVERHEAD, too_large(limit_mb)
        return JSON_BODY_LIMIT, ApiError(413, f"request body larger than {JSON_BODY_LIMIT // 1024} KB",
                                         "only uploads (multipart/form-data) may be larger")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = Headers(scope=scope)
        refused = self.refusal(method, path, headers, QueryParams(scope.get("query_string", b"")))
        limit, over_limit = self.body_limit(method, path, headers)
        declared = headers.get("content-length")
        if refused is None and declared is not None and (not declared.isdigit() or int(declared) > limit):
            refused = over_limit
        if refused is None and method == "POST" and (no_room := self.settings.no_room.get(path)) is not None:
            refused = no_room()
        if refused is not None:
            await answer(refused, scope, receive, send)
            return

        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the app answers to a body cut short, the client gets the 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            pass
        if exceeded and not started:
            await answer(over_limit, scope, receive, send)


async def answer(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    """The JSON error; the connection closes after it (the rest of the body is never read)."""
    response = error_response(error.status, error.error, error.hint, {**(error.headers or {}), "Connection": "close"})
    await response(scope, receive, send)
