"""One error base class; every failure leaves as RFC 9457 problem details."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.context import request_id_var

PROBLEM_JSON = "application/problem+json"

# The problem document every error answers with (RFC 9457 plus a stable `code`); operations may add
# members (`errors` for validation, `checks` for readiness ...), hence additionalProperties.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "code", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string", "description": "Stable machine-readable error code"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}, "type": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}
_PROBLEM_DESCRIPTIONS = {
    400: "Bad request (malformed JSON, a bad header, an invalid cursor)",
    401: "Authentication required or the token is not valid",
    403: "Permission denied",
    404: "Not found (or not visible to the caller)",
    409: "Conflict with the current state",
    412: "If-Match does not match the current ETag",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "The request is not valid (each field in `errors`)",
    428: "If-Match header required",
    429: "Too many requests",
    500: "Internal server error (quote the request id)",
    503: "Service unavailable",
}


def problem_response(description: str) -> dict[str, Any]:
    """One problem answer for `responses=`, documented as what it is."""
    return {"description": description, "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for routers and routes: the listed problem answers (default: all of them)."""
    return {code: problem_response(_PROBLEM_DESCRIPTIONS[code]) for code in codes or _PROBLEM_DESCRIPTIONS}


# Every operation documents these; a router's list is the whole set the service can answer with.
PROBLEMS = problem_responses()


class AppError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}
        self.extra = extra


class BadRequest(AppError):
    pass


class InvalidInput(AppError):
    status, code, title = 422, "validation_error", "The request is not valid"


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str | None = None, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail, code=code, headers={"WWW-Authenticate": "Bearer"}, **extra)


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Permission denied"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class PreconditionFailed(AppError):
    status, code, title = 412, "precondition_failed", "The resource changed since you read it"


class PreconditionRequired(AppError):
    status, code, title = 428, "precondition_required", "If-Match header required"


class PayloadTooLarge(AppError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class RateLimited(AppError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(AppError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail or title,
    }
    if instance:
        body["instance"] = instance
    rid = request_id_var.get()
    if rid:
        body["request_id"] = rid
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Permission denied"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}


_FASTAPI_BODY_ERROR = "There was an error parsing the body"


def _clean_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"field": ".".join(loc), "message": e.get("msg", ""), "type": e.get("type", "")})
    return out


def internal_error_response(path: str) -> JSONResponse:
    """Unexpected errors (logged by the request middleware with the request id) never leak."""
    return problem(
        500,
        "internal_error",
        "Internal server error",
        "An unexpected error occurred; quote the request id when reporting it",
        instance=path,
    )


def _document_problem_schema(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DATABASE_BUSY_RETRY_SECONDS = 1


def database_busy(exc: OperationalError) -> bool:
    """SQLite gave up waiting for its one write lock (after `KB_SQLITE_BUSY_TIMEOUT_SECONDS`)."""
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message


def install_error_handlers(app: FastAPI) -> None:
    _document_problem_schema(app)

    @app.exception_handler(OperationalError)
    async def _operational(request: Request, exc: OperationalError) -> JSONResponse:
        """A saturated SQLite writer is the server's momentary state, not a bug: 503 with
        Retry-After; the request's transaction was rolled back, so retrying is safe."""
        if not database_busy(exc):
            raise exc  # the request middleware logs it and answers 500 internal_error
        return problem(
            503,
            "database_busy",
            "Database busy",
            "Too many concurrent writes; retry after the number of seconds in Retry-After",
            instance=request.url.path,
            headers={"Retry-After": str(DATABASE_BUSY_RETRY_SECONDS)},
        )

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return problem(
            exc.status,
            exc.code,
            exc.title,
            exc.detail,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem(
                400,
                "malformed_json",
                "Malformed JSON",
                "The body is not valid JSON",
                instance=request.url.path,
                errors=_clean_errors(errors),
            )
        return problem(
            422,
            "validation_error",
            "The request is not valid",
            "; ".join(f"{e['field']}: {e['message']}" for e in _clean_errors(errors))[:2000],
            instance=request.url.path,
            errors=_clean_errors(errors),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http_error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 400 and detail == _FASTAPI_BODY_ERROR:
            # FastAPI's answer when json.loads fails other than by syntax: bytes that are not
            # UTF-8, or nesting deeper than the parser's recursion limit. Same problem as bad syntax.
            return problem(
                400,
                "malformed_json",
                "Malformed JSON",
                "The body is not valid JSON (not UTF-8, or nested too deeply)",
                instance=request.url.path,
            )
        return problem(
            exc.status_code, code, title, detail, instance=request.url.path, headers=getattr(exc, "headers", None)
        )
