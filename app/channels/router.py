"""The channel read API, `/api/v1/channels/{channel}/...`: public on the channels of
`KB_PUBLIC_CHANNELS` (anonymous callers), otherwise for the channel's client or (agent) staff.
See app/channels/access.py for who may call."""

from __future__ import annotations

from fastapi import APIRouter

from app.channels.ratelimit import RateLimit
from app.core.errors import PROBLEMS

# RateLimit resolves the caller (app/channels/access.py) first: who reads, then how often.
router = APIRouter(prefix="/channels/{channel}", tags=["channels"], responses=PROBLEMS, dependencies=[RateLimit])
