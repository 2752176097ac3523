"""Loading an item for a request: the read and edit checks every item route shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.deps import DbSession
from app.core.errors import NotFound
from app.identity.deps import deny, record_denial, require_any
from app.identity.principal import Principal
from app.knowledge import acl, proposals, service
from app.knowledge.models import Item

# Draft writes: `knowledge:edit`, or a proposal permission for one's own proposal (app/knowledge/proposals.py,
# checked by `accessible_item(..., edit=True)`).
Writer = Annotated[Principal, Depends(require_any("knowledge:edit", proposals.PROPOSE_CASE))]


def item_not_found(item_id: int) -> NotFound:
    return NotFound(f"No item with id {item_id}", code="item_not_found")


async def accessible_item(
    request: Request, session: DbSession, principal: Principal, item_id: int, *, write: bool = False, edit: bool = False
) -> Item:
    """The item, if the caller may read it (else 404, audited); `edit`: and edit it (else 403): the
    edit grants, and `knowledge:edit` or the caller's own proposal (app/knowledge/proposals.py).
    `write` locks the row (PostgreSQL) so concurrent writers queue."""
    item = await service.load_item(session, item_id, for_update=write)
    if item is None:
        raise item_not_found(item_id)
    if not await acl.can_read(session, principal, item):
        await record_denial(request, principal, "knowledge:read", "item", item_id)
        raise item_not_found(item_id)
    if edit and not (proposals.may_edit(principal, item) and await acl.can_edit(session, principal, item)):
        raise await deny(request, principal, "knowledge:edit", "item", item_id)
    return item
