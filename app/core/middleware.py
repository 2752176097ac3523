"""Pure ASGI middleware: request ids, access logs, metrics, security headers, body limits."""

from __future__ import annotations

import logging
import re
import time
import uuid

from prometheus_client import Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import request_id_var

log = logging.getLogger("app.access")

REQUESTS = Counter("kb_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "kb_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

_RID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
# The API serves JSON; the docs page needs its CDN assets, so it gets no CSP here.
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if _RID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status = 500
        path = scope["path"]

        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = rid
                for k, v in SECURITY_HEADERS:
                    headers.setdefault(k.decode(), v.decode())
                if path.startswith("/api/"):
                    headers.setdefault(API_CSP[0].decode(), API_CSP[1].decode())
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error", extra={"path": path})
            if started:
                raise
            from app.core.errors import internal_error_response

            await internal_error_response(path)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            template = _route_template(scope, path)
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            LATENCY.labels(scope["method"], template).observe(elapsed)
            log.info(
                "request",
                extra={"method": scope["method"], "path": path, "status": status, "ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)


def _route_template(scope: Scope, path: str) -> str:
    """`/api/v1/users/{user_id}` rather than `/api/v1/users/42`: bounded metric labels."""
    if scope.get("route") is None:
        return "unmatched"
    segments = path.split("/")
    for name, value in (scope.get("path_params") or {}).items():
        for i, seg in enumerate(segments):
            if seg == str(value):
                segments[i] = "{" + name + "}"
                break
    return "/".join(segments)


class NulCharacterMiddleware:
    """400 for a NUL character in the path or the query string, before any route runs: PostgreSQL
    text cannot hold one (the query would fail as a 500) and no name or search needs one.
    JSON bodies are checked by `app.core.schemas.Schema`, form fields by their type."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]
        ):
            from app.core.errors import problem

            response = problem(
                400,
                "nul_character",
                "NUL character in the URL",
                "The path or query string holds a NUL character (%00)",
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """413 before a too-large body is read: by Content-Length, or while streaming."""

    def __init__(
        self,
        app: ASGIApp,
        json_limit: int,
        upload_limit: int,
        import_limit: int | None = None,
        import_path: str = "/api/v1/imports",
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.import_limit = import_limit or upload_limit
        self.import_path = import_path  # bulk imports stream a file (NDJSON, CSV, XLSX, ZIP) to disk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        limit = self.upload_limit if ctype.startswith("multipart/") else self.json_limit
        if scope["path"] == self.import_path:
            limit = self.import_limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(scope, receive, send, limit)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"Request body exceeds {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    from app.core.errors import problem

    response = problem(
        413,
        "payload_too_large",
        "Request body too large",
        f"Request body exceeds {limit} bytes",
        instance=scope["path"],
    )
    await response(scope, receive, send)
