"""Who reads a channel, and may they?

- A channel client (client credentials) reads its own channel only.
- Users (staff) read the `agent` channel.
- Anonymous callers read the channels listed in `KB_PUBLIC_CHANNELS` (default `web`; `agent`
  never): they stand for the ACL subject "public" only, so they see `visibility=public` items.

Every caller needs `knowledge:read` (anonymous callers hold it implicitly on a public channel).
An unknown channel is 404, like any path that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from app.core.errors import Forbidden, NotFound, Unauthorized
from app.identity.deps import MaybePrincipal, deny
from app.identity.principal import Principal
from app.search.documents import CHANNELS

AGENT = "agent"
READ = "knowledge:read"


def anonymous(channel: str) -> Principal:
    """The principal of an anonymous reader of a public channel: ACL subject "public" only."""
    return Principal(
        kind="anonymous", id=0, name="anonymous", permissions=frozenset({READ, "search:query"}), channel=channel
    )


@dataclass(frozen=True, slots=True)
class ChannelCaller:
    channel: str
    principal: Principal
    address: str  # the client's address (rate limits of anonymous callers)

    @property
    def is_anonymous(self) -> bool:
        return self.principal.kind == "anonymous"

    @property
    def key(self) -> str:
        """Whom a rate limit counts: the client or user, or the address of an anonymous caller."""
        return f"ip:{self.address}" if self.is_anonymous else self.principal.actor


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def channel_caller(
    request: Request,
    principal: MaybePrincipal,
    channel: Annotated[str, Path(max_length=16, description="agent, web, wechat or app")],
) -> ChannelCaller:
    if channel not in CHANNELS:
        raise NotFound(f"No channel {channel!r}; channels are {', '.join(CHANNELS)}", code="unknown_channel")
    address = client_address(request)
    if principal is None:
        if channel not in request.app.state.settings.public_channels:
            raise Unauthorized(
                f"The {channel} channel is not public: sign in or use the channel's client", code="unauthenticated"
            )
        return ChannelCaller(channel, anonymous(channel), address)
    if principal.kind == "client" and principal.channel != channel:
        raise Forbidden(
            f"This client serves the {principal.channel or 'no'} channel, not {channel}", code="channel_mismatch"
        )
    if principal.kind == "user" and channel != AGENT:
        raise Forbidden("Staff read the agent channel", code="channel_mismatch")
    if not principal.can(READ):
        raise await deny(request, principal, READ)
    return ChannelCaller(channel, principal, address)


Caller = Annotated[ChannelCaller, Depends(channel_caller)]
