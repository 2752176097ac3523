from __future__ import annotations

from typing import Annotated

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """Request bodies: unknown fields are refused, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Out(BaseModel):
    """Responses, built from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


# Every id a client sends (path, query or body) has the range the database holds: BIGINT ids,
# INTEGER version numbers. Past it the answer is 422, never an overflow inside the driver.
MAX_ID = 2**63 - 1
MAX_VERSION_NO = 2**31 - 1
Id = Annotated[int, Ge(1), Le(MAX_ID)]
VersionNo = Annotated[int, Ge(1), Le(MAX_VERSION_NO)]
