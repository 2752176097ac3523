"""The publishing workflow on versions: one table of transitions, the single place the rule lives.

    draft ──submit──▶ in_review ──approve──▶ approved ──publish──▶ published ──archive──▶ archived
      ▲                │  │                    │                      │  │
      └───withdraw─────┘  └──reject──▶ rejected│                      │  └─unpublish──▶ unpublished
      ▲                                 │      │                      └─(superseded when a newer
      ├───reopen (or any draft edit)────┘      │                          version is published)
      └───withdraw─────────────────────────────┘ (also cancels a scheduled publication)

    draft ──publish──▶ published   only for item types with review_required = False

With four-eyes review (`KB_FOUR_EYES=true`) nobody may approve a version they wrote or changed:
its author, and whoever saved, restored into or changed the attachments of that version (the
audit log records each of those with the version's number).

`superseded`, `unpublished` and `archived` are final. Unpublishing (下线) takes the item off
search and every channel without archiving it: an edit then starts a new draft from that
content, which goes through review and publishing again. At most one version of an item is "open" (draft,
in_review, approved or rejected) and it is always the latest; exactly one may be published.
A scheduled publication (publish with `publish_at` in the future) leaves the version
`approved` with `publish_at` set; the job `knowledge.publish_scheduled` publishes it then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, String, cast, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEntry
from app.audit.service import record
from app.channels.changes import reconcile
from app.core.db import utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput
from app.core.pagination import PageParams, paginate_by_id
from app.identity.principal import Principal
from app.knowledge import acl, proposals, service
from app.knowledge.models import OPEN_STATES, Item, ItemVersion
from app.knowledge.schemas import TransitionIn
from app.taxonomy import service as taxonomy
from app.workers.outbox import enqueue

ACTIONS = ("submit", "withdraw", "approve", "reject", "reopen", "publish", "unpublish", "archive")

# The permission each action needs (the router's `Require`).
PERMISSIONS: dict[str, str] = {
    "submit": "knowledge:submit",
    "withdraw": "knowledge:submit",  # and the caller is the version's author or a reviewer
    "approve": "knowledge:review",
    "reject": "knowledge:review",
    "reopen": "knowledge:edit",
    "publish": "knowledge:publish",
    "unpublish": "knowledge:publish",
    "archive": "knowledge:archive",
}

SUMMARIES: dict[str, str] = {
    "submit": "Submit the draft for review (提交审核)",
    "withdraw": "Withdraw a version in review or approved (not yet published) back to draft (撤回)",
    "approve": "Approve a version in review (审核通过)",
    "reject": "Reject a version in review with a reason (驳回); it can be edited again",
    "reopen": "Turn a rejected version back into an editable draft (重新编辑)",
    "publish": "Publish now, or at `publish_at` (定时发布); supersedes the published version",
    "unpublish": "Take the published version offline (下线): off search and every channel, not archived",
    "archive": "Archive the published version and the item (归档)",
}


@dataclass(frozen=True, slots=True)
class Rule:
    action: str
    source: str
    target: str
    only_without_review: bool = False  # for item types that do not require review


RULES: tuple[Rule, ...] = (
    Rule("submit", "draft", "in_review"),
    Rule("withdraw", "in_review", "draft"),
    Rule("withdraw", "approved", "draft"),
    Rule("approve", "in_review", "approved"),
    Rule("reject", "in_review", "rejected"),
    Rule("reopen", "rejected", "draft"),
    Rule("publish", "approved", "published"),
    Rule("publish", "draft", "published", only_without_review=True),
    Rule("unpublish", "published", "unpublished"),
    Rule("archive", "published", "archived"),
)


def _applies(rule: Rule, review_required: bool) -> bool:
    return not (rule.only_without_review and review_required)


def allowed_actions(state: str, review_required: bool = True) -> list[str]:
    """The actions allowed from `state`, in the order of ACTIONS."""
    found = {r.action for r in RULES if r.source == state and _applies(r, review_required)}
    return [a for a in ACTIONS if a in found]


def target_state(action: str, state: str, review_required: bool = True) -> str:
    """The state `action` leads to from `state`; 409 `invalid_transition` (with `allowed`) if none."""
    for r in RULES:
        if r.action == action and r.source == state and _applies(r, review_required):
            return r.target
    allowed = allowed_actions(state, review_required)
    raise Conflict(
        f"Cannot {action} a version that is {state}; allowed: {', '.join(allowed) or 'nothing'}",
        code="invalid_transition",
        action=action,
        state=state,
        allowed=allowed,
    )


def may_withdraw(actor: Principal, version: ItemVersion) -> bool:
    """Only the version's author or a reviewer may withdraw it."""
    return actor.can("knowledge:review") or (actor.kind == "user" and actor.id == version.author_id)


# ---------------------------------------------------------------- carrying out a transition

SCHEDULED_PUBLISH_JOB = "knowledge.publish_scheduled"
INDEX_JOB = "search.index_item"
SCHEDULER = Principal(kind="system", id=0, name="scheduler", permissions=frozenset())


async def review_required(session: AsyncSession, item: Item) -> bool:
    return (await taxonomy.get_item_type(session, item.item_type)).review_required


async def publish_many(
    session: AsyncSession, actor: Principal, pairs: list[tuple[Item, ItemVersion]], now: datetime
) -> dict[int, int]:
    """Publish each `version` of its item, superseding the published ones in the same transaction
    (one flush for all). Returns item id -> the number of the version it superseded."""
    superseded: dict[int, int] = {}
    for item, version in pairs:
        old = await service.published_version(session, item)
        if old is not None and old.id != version.id:
            old.state = "superseded"
            superseded[item.id] = old.number
    if superseded:
        await session.flush()  # free the one-published slots before taking them
    for item, version in pairs:
        version.state = "published"
        version.published_at, version.published_by, version.publish_at = now, service.user_id(actor), None
        item.published_version_id, item.status = version.id, "published"
    return superseded


async def publish_now(
    session: AsyncSession, actor: Principal, item: Item, version: ItemVersion, now: datetime
) -> int | None:
    """Publish `version`; returns the number of the version it superseded, if any."""
    return (await publish_many(session, actor, [(item, version)], now)).get(item.id)


async def archive_now(session: AsyncSession, item: Item, version: ItemVersion) -> None:
    """Archive the item and its published `version`; an open version will never go out."""
    item.status, item.published_version_id = "archived", None
    version.state = "archived"
    latest = await service.latest_version(session, item)
    if latest.state in OPEN_STATES:
        latest.publish_at = None  # nothing of an archived item goes out later


# Audited actions that change a version's content; their entries carry the version's number.
CONTENT_ACTIONS = ("item.draft_save", "item.restore", "item.attachments_add", "item.attachment_remove")


def wrote(actor: Principal) -> ColumnElement[bool]:
    """SQL on item_versions: `actor` wrote or changed the version (its author, or an audited
    content change of that version)."""
    changed = exists().where(
        AuditEntry.target_type == "item",
        AuditEntry.target_id == cast(ItemVersion.item_id, String),
        AuditEntry.action.in_(CONTENT_ACTIONS),
        AuditEntry.outcome == "ok",
        AuditEntry.actor == actor.actor,
        AuditEntry.summary["version"].as_integer() == ItemVersion.number,
    )
    if actor.kind != "user":
        return changed
    return or_(changed, func.coalesce(ItemVersion.author_id, -1) == actor.id)  # an author deleted since: nobody


async def _check_four_eyes(session: AsyncSession, actor: Principal, item: Item, version: ItemVersion) -> None:
    if await session.scalar(select(wrote(actor)).where(ItemVersion.id == version.id)):
        raise Forbidden(
            "Four-eyes review: you wrote or changed this version, so another reviewer must approve it",
            code="four_eyes",
            version=version.number,
        )


def _check_input(action: str, data: TransitionIn) -> None:
    if action == "reject" and not (data.reason or "").strip():
        raise InvalidInput("A rejection needs a reason for the author", code="reason_required", field="reason")
    if data.publish_at is not None and action != "publish":
        raise InvalidInput("publish_at is only for publish", code="publish_at_not_allowed", field="publish_at")


async def _apply(
    session: AsyncSession,
    actor: Principal,
    item: Item,
    version: ItemVersion,
    action: str,
    data: TransitionIn,
    four_eyes: bool,
) -> dict[str, Any]:
    """Change the state (no commit); returns what the audit entry records."""
    now = utcnow()
    from_state = version.state
    target = target_state(action, from_state, await review_required(session, item))
    service.ensure_not_archived(item)
    _check_input(action, data)
    if (action == "approve" and four_eyes) or (
        action in ("approve", "publish") and proposals.is_proposal_type(item.item_type)
    ):
        await _check_four_eyes(session, actor, item, version)  # a proposal: always
    info: dict[str, Any] = {"version": version.number, "from_state": from_state}
    if data.note:
        info["note"] = data.note
    if action in ("submit", "publish"):
        await service.check_complete(session, item, version)
    if action == "submit":
        version.submitted_at = now
    elif action == "withdraw":
        info["cancelled_publish_at"] = version.publish_at.isoformat() if version.publish_at else None
        version.publish_at = None
    elif action in ("approve", "reject"):
        version.reviewed_by, version.reviewed_at = service.user_id(actor), now
        version.review_note = data.reason if action == "reject" else data.note
        if action == "reject":
            info["reason"] = data.reason
    elif action == "publish" and data.publish_at is not None and data.publish_at > now:
        target = "approved"  # scheduled: waits as approved (a draft of a no-review type is approved now)
        at = data.publish_at.astimezone(UTC)
        version.publish_at = at
        info["publish_at"] = at.isoformat()
        enqueue(
            session,
            SCHEDULED_PUBLISH_JOB,
            {"item_id": item.id, "version": version.number, "publish_at": at.isoformat()},
            run_after=at,
            created_by=actor.actor,
        )
    elif action == "publish":
        info["superseded"] = await publish_now(session, actor, item, version, now)
    elif action == "unpublish":
        item.status, item.published_version_id = "unpublished", None
    elif action == "archive":
        await archive_now(session, item, version)
    if action != "publish" or target != "published":
        version.state = target
    info["to_state"] = version.state
    version.updated_at = item.updated_at = now
    await session.flush()
    if action in ("publish", "unpublish", "archive"):
        await acl.refresh_readers(session, [item.id])
        await reconcile(session, [item.id])  # the change feed, in this transaction
    enqueue(session, INDEX_JOB, {"item_id": item.id})
    return info


async def transition(
    session: AsyncSession,
    actor: Principal,
    item: Item,
    version: ItemVersion,
    action: str,
    data: TransitionIn,
    *,
    four_eyes: bool = False,
) -> ItemVersion:
    """Carry out `action` on `version`: checked against RULES, audited and queued for indexing in
    the same transaction."""
    async with service.write_guard(session, item.id):
        info = await _apply(session, actor, item, version, action, data, four_eyes)
        scheduled = action == "publish" and version.state == "approved"
        record(session, actor, "item.schedule_publish" if scheduled else f"item.{action}", "item", item.id, **info)
        await session.commit()
    return version


async def publish_due(session: AsyncSession, item_id: int, number: int, publish_at: str) -> dict[str, Any]:
    """The scheduled publication (job `knowledge.publish_scheduled`; the worker commits). Does
    nothing when the version was withdrawn, rescheduled or the item archived meanwhile."""
    item = await service.load_item(session, item_id, for_update=True)
    if item is None:
        return {"skipped": "item deleted"}
    version = await session.scalar(
        select(ItemVersion).where(ItemVersion.item_id == item_id, ItemVersion.number == number)
    )
    if (
        version is None
        or version.state != "approved"
        or version.publish_at is None
        or version.publish_at.astimezone(UTC).isoformat() != publish_at
    ):
        return {"skipped": "no longer scheduled"}
    if item.status == "archived":
        return {"skipped": "item archived"}
    now = utcnow()
    superseded = await publish_now(session, SCHEDULER, item, version, now)
    version.updated_at = item.updated_at = now
    await session.flush()
    await acl.refresh_readers(session, [item.id])
    await reconcile(session, [item.id])
    enqueue(session, INDEX_JOB, {"item_id": item.id})
    record(
        session,
        SCHEDULER,
        "item.publish",
        "item",
        item.id,
        version=number,
        from_state="approved",
        to_state="published",
        superseded=superseded,
        scheduled_for=publish_at,
    )
    return {"published": number, "item_id": item_id}


def review_queue_stmt(principal: Principal, state: str, four_eyes: bool = False) -> Select[tuple[ItemVersion]]:
    """The review queue's query (GET /reviews, the to-do list's `reviews` section counts it)."""
    stmt = (
        select(ItemVersion)
        .join(Item, Item.id == ItemVersion.item_id)
        .where(ItemVersion.state == state, Item.status != "archived", acl.read_filter(principal))
    )
    if not principal.can("knowledge:review"):  # an approver of proposal types only (app/knowledge/proposals.py)
        stmt = stmt.where(Item.item_type.in_(proposals.approvable_types(principal)))
    if four_eyes and state == "in_review":
        stmt = stmt.where(~wrote(principal))
    return stmt


async def review_queue(
    session: AsyncSession, principal: Principal, page: PageParams, state: str, four_eyes: bool = False
) -> tuple[list[tuple[ItemVersion, Item]], str | None]:
    """Versions waiting in `state` (待办), oldest first, among the items the caller may read; with
    four-eyes review, versions in review that the caller wrote are someone else's to approve."""
    stmt = review_queue_stmt(principal, state, four_eyes)
    versions, nxt = await paginate_by_id(session, stmt, ItemVersion.id, page, descending=False)
    items = (
        {i.id: i for i in (await session.scalars(select(Item).where(Item.id.in_({v.item_id for v in versions})))).all()}
        if versions
        else {}
    )
    return [(v, items[v.item_id]) for v in versions], nxt
