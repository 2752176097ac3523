"""ETags and conditional requests: `If-Match` guards writes, `If-None-Match` saves reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Request, Response

from app.core.errors import PreconditionFailed, PreconditionRequired

IfMatch = Annotated[str | None, Header(alias="If-Match", description="The ETag you read; required for updates")]


def make_etag(kind: str, id_: int, version: int) -> str:
    return f'"{kind}-{id_}-{version}"'


def check_if_match(if_match: str | None, current_etag: str, current_version: int) -> None:
    """428 without If-Match, 412 when it names an older state (with the current version)."""
    if if_match is None:
        raise PreconditionRequired(
            "Send If-Match with the ETag you read, so no one else's change is lost",
            current_etag=current_etag,
            current_version=current_version,
        )
    tags = {t.strip().removeprefix("W/") for t in if_match.split(",")}
    if "*" not in tags and current_etag not in tags:
        raise PreconditionFailed(
            "Someone changed this since you read it; reload and apply your edit again",
            current_etag=current_etag,
            current_version=current_version,
        )


def not_modified(request: Request, response: Response, etag: str, cache_control: str | None = None) -> bool:
    """Set ETag (and Cache-Control) on the response; True when the client's copy is current (send 304)."""
    response.headers["ETag"] = etag
    if cache_control:
        response.headers["Cache-Control"] = cache_control
    inm = request.headers.get("if-none-match")
    if inm is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
    return "*" in tags or etag in tags
