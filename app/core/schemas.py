from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, field_validator


class Schema(BaseModel):
    """Request bodies: unknown fields are refused, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """NUL is valid JSON but no text column holds it (PostgreSQL refuses it): a 422, not a 500."""
        if _has_nul(value):
            raise ValueError("text must not contain NUL (\\u0000)")
        return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


class Out(BaseModel):
    """Responses, built from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


# Every id a client sends (path, query or body) has the range the database holds: BIGINT ids,
# INTEGER version numbers. Past it the answer is 422, never an overflow inside the driver.
MAX_ID = 2**63 - 1
MAX_VERSION_NO = 2**31 - 1
Id = Annotated[int, Ge(1), Le(MAX_ID)]
VersionNo = Annotated[int, Ge(1), Le(MAX_VERSION_NO)]
