from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, field_validator


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def no_nul(value: Any) -> Any:
    """For form fields and other inputs outside a `Schema`: `Annotated[str, Form(), AfterValidator(no_nul)]`."""
    if _has_nul(value):
        raise ValueError("NUL characters (\\u0000) are not allowed")
    return value


class Schema(BaseModel):
    """Request bodies: unknown fields are refused, strings are stripped, NUL characters refused
    (valid JSON as `\\u0000`, but PostgreSQL text cannot hold them and no content needs them)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


class Out(BaseModel):
    """Responses, built from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


# Every id a client sends (path, query or body) has the range the database holds: BIGINT ids,
# INTEGER version numbers. Past it the answer is 422, never an overflow inside the driver.
MAX_ID = 2**63 - 1
MAX_VERSION_NO = 2**31 - 1
Id = Annotated[int, Ge(1), Le(MAX_ID)]
VersionNo = Annotated[int, Ge(1), Le(MAX_VERSION_NO)]
