"""What a channel shows: the one lookup every channel route uses.

An item that is missing, draft, unpublished, archived, expired or not yet valid, not shown on the
channel, or not readable by the caller answers the same 404 `item_not_found`, so a public
channel never reveals that an internal item exists.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.access import ChannelCaller
from app.core.errors import NotFound
from app.knowledge import acl
from app.knowledge.deps import item_not_found
from app.knowledge.models import Item, ItemVersion


def shown(caller: ChannelCaller) -> ColumnElement[bool]:
    """SQL on `Item` joined to its published `ItemVersion`: the caller sees it on the channel now."""
    return and_(acl.visible_filter(caller.principal), acl.channel_filter(caller.channel))


def shown_select(caller: ChannelCaller) -> Select[tuple[Item, ItemVersion]]:
    """`select(Item, ItemVersion)` of the items the caller sees on the channel, with their served version."""
    return (select(Item, ItemVersion).join(ItemVersion, ItemVersion.id == Item.published_version_id)
            .where(shown(caller)))


async def shown_item(session: AsyncSession, caller: ChannelCaller, item_id: int) -> tuple[Item, ItemVersion]:
    row = (await session.execute(shown_select(caller).where(Item.id == item_id))).first()
    if row is None:
        raise item_not_found(item_id)
    return row[0], row[1]


async def shown_item_by_external(session: AsyncSession, caller: ChannelCaller, source: str,
                                 external_id: str) -> tuple[Item, ItemVersion]:
    row = (await session.execute(shown_select(caller).where(Item.source == source,
                                                            Item.external_id == external_id))).first()
    if row is None:
        raise NotFound(f"No item {external_id!r} from {source!r}", code="item_not_found")
    return row[0], row[1]
