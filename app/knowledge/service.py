"""Items, their versions and drafts. The workflow (state changes) is in workflow.py, the ACL in acl.py.

Editing model (decided here, documented in the API):

- An item has at most one *open* version (draft, in_review, approved or rejected), always its
  latest. `PATCH /items/{id}/draft` edits it when it is a draft (a rejected one becomes a draft
  again); when there is none, it first copies the latest version into a new draft. A version in
  review or approved is locked (409 `version_locked`: withdraw it first). Every other version is
  immutable.
- Restore copies an old version into a new draft; when a draft is already open, 409 `draft_open`
  unless `replace=true`, which overwrites that draft's content.
- `DELETE /items/{id}/draft` discards the open draft (or rejected version): the version before
  it is the latest again. An item whose only version is that draft (never submitted, never
  published) is deleted whole with `DELETE /items/{id}` instead. Attachments only the discarded
  version carried are left to the orphan collection job.
- Every change bumps `items.row_version` (SQLAlchemy's optimistic lock), which is the ETag of the
  item and of its draft: writes must send it in `If-Match`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import nh3
from sqlalchemy import and_, cast, delete, exists, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

import app.attachments.models  # noqa: F401 - declares ItemVersion.attachments, copied with versions
from app.audit.service import changes, record
from app.channels.changes import reconcile
from app.core.db import like_pattern, utcnow
from app.core.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge, PreconditionFailed
from app.core.etag import make_etag
from app.core.pagination import PageParams, paginate_by_id
from app.identity.models import User
from app.identity.principal import Principal
from app.knowledge import acl, proposals
from app.knowledge.models import OPEN_STATES, AclGrant, Item, ItemVersion, version_categories, version_tags
from app.knowledge.schemas import CHANNELS, MAX_SIMILAR_QUESTIONS, ContentFields, ItemCreate, ItemUpdate
from app.taxonomy import service as taxonomy
from app.taxonomy.models import AttributeDefinition, Tag
from app.workers.outbox import enqueue

MAX_BODY_CHARS = 500_000
EDITOR_PERMISSIONS = (
    "knowledge:create",
    "knowledge:edit",
    "knowledge:submit",
    "knowledge:review",
    "knowledge:publish",
    "knowledge:archive",
)
CONTENT_FIELDS = (
    "title",
    "question",
    "similar_questions",
    "body",
    "body_format",
    "channel_answers",
    "channels",
    "attributes",
    "change_note",
)

# Common formatting, tables, links and images; nh3 drops scripts, styles, event handlers and
# javascript: URLs whatever the list says.
_TAGS = set(nh3.ALLOWED_TAGS) | {"tfoot"}
_ATTRIBUTES = {k: set(v) for k, v in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES["a"] = _ATTRIBUTES.get("a", set()) | {"title", "target"}
_ATTRIBUTES["img"] = _ATTRIBUTES.get("img", set()) | {"title"}
_URL_SCHEMES = {"http", "https", "mailto", "tel"}


# ---------------------------------------------------------------- content helpers


def sanitize_html(html: str) -> str:
    """Safe HTML: <script>, <style>, on* handlers and javascript: links are stripped."""
    return nh3.clean(html, tags=_TAGS, attributes=_ATTRIBUTES, url_schemes=_URL_SCHEMES, link_rel="noopener noreferrer")


def answer_for(version: ItemVersion, channel: str) -> str:
    """The answer `channel` shows: its own answer when the version has one, else the body."""
    own = (version.channel_answers or {}).get(channel)
    return own if own else version.body


def answers(version: ItemVersion) -> dict[str, str]:
    return {c: answer_for(version, c) for c in CHANNELS}


def normalize_questions(questions: list[str], standard: str = "") -> list[str]:
    """Similar questions trimmed, blanks, duplicates and the standard question itself dropped."""
    seen = {" ".join(standard.split())} if standard else set()
    out = []
    for q in questions:
        q = " ".join(q.split())
        if q and q not in seen:
            seen.add(q)
            out.append(q)
    if len(out) > MAX_SIMILAR_QUESTIONS:
        raise InvalidInput(
            f"At most {MAX_SIMILAR_QUESTIONS} similar questions (got {len(out)} distinct ones)",
            code="too_many_similar_questions",
            field="similar_questions",
            limit=MAX_SIMILAR_QUESTIONS,
        )
    return out


def is_editor(principal: Principal) -> bool:
    """Editors see every version; readers (only knowledge:read) see the published one."""
    return any(principal.can(p) for p in EDITOR_PERMISSIONS)


def sees_open_versions(principal: Principal, item: Item) -> bool:
    """Editors, and for a proposal type (app/knowledge/proposals.py) its proposer and approvers, see
    every version of the item; other readers the published one."""
    return is_editor(principal) or proposals.sees_open_versions(principal, item)


def etag_of(item: Item) -> str:
    return make_etag("item", item.id, item.row_version)


def check_validity(valid_from: datetime | None, valid_to: datetime | None) -> None:
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        raise InvalidInput("valid_to must be after valid_from", code="invalid_validity", field="valid_to")


def ensure_not_archived(item: Item) -> None:
    if item.status == "archived":
        raise Conflict("This item is archived and can no longer be edited", code="item_archived")


LOCKED_STATES = ("in_review", "approved")


def ensure_unlocked(latest: ItemVersion, to: str | None = None) -> None:
    """A version in review or approved is locked: 409 `version_locked` until it is withdrawn."""
    if latest.state in LOCKED_STATES:
        raise Conflict(
            f"Version {latest.number} is {latest.state}; withdraw it {f'to {to}' if to else 'first'}",
            code="version_locked",
            state=latest.state,
            version=latest.number,
        )


@asynccontextmanager
async def write_guard(session: AsyncSession, item_id: int) -> AsyncIterator[None]:
    """A concurrent writer got there first: 412 with the current version when the optimistic lock on
    items.row_version caught it, 409 `concurrent_update` when a unique index on item_versions did
    (the one-published-version index, two new drafts at once). Nothing is written either way."""
    try:
        yield
    except StaleDataError:
        await session.rollback()
        current = await session.scalar(select(Item.row_version).where(Item.id == item_id))
        raise PreconditionFailed(
            "Someone changed this item at the same moment; reload and try again",
            current_etag=make_etag("item", item_id, current or 0),
            current_version=current,
        )
    except IntegrityError as e:
        if "item_versions" not in str(e.orig):
            raise
        await session.rollback()  # the one-published-version index, or two new drafts at once
        raise Conflict(
            "Someone changed this item's versions at the same moment; reload and try again", code="concurrent_update"
        )


# ---------------------------------------------------------------- loading


async def load_item(session: AsyncSession, item_id: int, *, for_update: bool = False) -> Item | None:
    stmt = select(Item).where(Item.id == item_id)
    if for_update:  # PostgreSQL: concurrent writers queue here and then see the newer row_version
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return await session.scalar(stmt)


async def version_no(session: AsyncSession, item: Item, number: int) -> ItemVersion:
    v = await session.scalar(select(ItemVersion).where(ItemVersion.item_id == item.id, ItemVersion.number == number))
    if v is None:
        raise NotFound(f"Item {item.id} has no version {number}", code="version_not_found")
    return v


async def latest_version(session: AsyncSession, item: Item) -> ItemVersion:
    return await version_no(session, item, item.latest_version_no)


async def published_version(session: AsyncSession, item: Item) -> ItemVersion | None:
    if item.published_version_id is None:
        return None
    return await session.get(ItemVersion, item.published_version_id)


async def served_version(session: AsyncSession, principal: Principal, item: Item) -> ItemVersion | None:
    """The version this caller sees (ACL already checked): editors the latest; readers the published
    one, while valid and shown on their channel; None when there is nothing to show them."""
    if sees_open_versions(principal, item):
        return await latest_version(session, item)
    if item.status != "published" or not acl.is_valid_at(item):
        return None
    v = await published_version(session, item)
    if v is None or not acl.shown_on(v, acl.channel_of(principal)):
        return None
    return v


async def attribute_defs(session: AsyncSession, item_type: str) -> list[AttributeDefinition]:
    return await taxonomy.template_for_type(session, item_type)


async def check_complete(session: AsyncSession, item: Item, version: ItemVersion) -> None:
    """Before submit / publish: required attributes present, every value still valid."""
    version.attributes = taxonomy.validate_attribute_values(
        await attribute_defs(session, item.item_type), dict(version.attributes or {}), for_publish=True
    )


# ---------------------------------------------------------------- writing content


def user_id(actor: Principal) -> int | None:
    """The user behind a principal (clients and the scheduler have none)."""
    return actor.id if actor.kind == "user" else None


def copy_version(source: ItemVersion, number: int, actor: Principal) -> ItemVersion:
    """A new draft with the content of `source`, its attachment set included."""
    return ItemVersion(
        item_id=source.item_id,
        number=number,
        state="draft",
        title=source.title,
        question=source.question,
        similar_questions=list(source.similar_questions),
        body=source.body,
        body_format=source.body_format,
        channel_answers=dict(source.channel_answers),
        channels=list(source.channels),
        attributes=dict(source.attributes),
        change_note="",
        author_id=user_id(actor),
        categories=list(source.categories),
        tags=list(source.tags),
        attachments=list(source.attachments),  # the attachment set (app/attachments/models.py)
    )


def _clean_body(body: str, body_format: str) -> str:
    if len(body) > MAX_BODY_CHARS:
        raise PayloadTooLarge(
            f"The body has {len(body)} characters; at most {MAX_BODY_CHARS} are allowed",
            code="body_too_large",
            field="body",
            limit=MAX_BODY_CHARS,
        )
    return sanitize_html(body) if body_format == "html" else body


async def apply_content(
    session: AsyncSession, actor: Principal, item: Item, version: ItemVersion, data: ContentFields
) -> list[str]:
    """Apply the fields the client sent to a draft; returns the names of those that changed.
    `null` clears optional fields; title, channels and body_format cannot be null."""
    sent = data.model_fields_set
    for name in ("title", "channels", "body_format"):
        if name in sent and getattr(data, name) is None:
            raise InvalidInput(f"{name} cannot be null", code="field_required", field=name)
    before = snapshot(version)
    if "title" in sent:
        version.title = data.title or ""
    if "question" in sent:
        version.question = " ".join((data.question or "").split())
    if "similar_questions" in sent or "question" in sent:
        qs = data.similar_questions if "similar_questions" in sent else version.similar_questions
        version.similar_questions = normalize_questions(qs or [], version.question)
    fmt = data.body_format if "body_format" in sent and data.body_format else version.body_format
    reformat = fmt != version.body_format
    if "body" in sent or reformat:
        version.body = _clean_body((data.body or "") if "body" in sent else version.body, fmt)
        version.body_format = fmt
    if "channel_answers" in sent or reformat:  # answers follow the body's format
        raw = dict(version.channel_answers)
        if "channel_answers" in sent:
            raw = data.channel_answers.model_dump() if data.channel_answers is not None else {}
        version.channel_answers = {
            c: (sanitize_html(t) if fmt == "html" else t).strip()
            for c, t in raw.items()
            if c in CHANNELS and t and t.strip()
        }
    if "channels" in sent and data.channels is not None:
        version.channels = [c for c in CHANNELS if c in data.channels]
    if "category_ids" in sent:
        version.categories = await taxonomy.validate_node_ids(session, data.category_ids or [])
    if "tags" in sent:
        version.tags = await taxonomy.resolve_tags(
            session, data.tags or [], create_missing=actor.can("taxonomy:manage")
        )
    if "attributes" in sent:
        version.attributes = taxonomy.validate_attribute_values(
            await attribute_defs(session, item.item_type), data.attributes or {}, for_publish=False
        )
    if "change_note" in sent:
        version.change_note = data.change_note or ""
    after = snapshot(version)
    return [k for k in after if after[k] != before[k]]


def snapshot(version: ItemVersion) -> dict[str, Any]:
    """The comparable content of a version (for change lists and diffs)."""
    out = {f: getattr(version, f) for f in CONTENT_FIELDS}
    out["categories"] = sorted(n.id for n in version.categories)
    out["tags"] = sorted(t.name for t in version.tags)
    out["attachments"] = sorted(a.id for a in version.attachments)
    return out


async def _check_owner(session: AsyncSession, owner_id: int | None) -> None:
    if owner_id is not None and await session.get(User, owner_id) is None:
        raise InvalidInput(f"No user with id {owner_id}", code="unknown_owner", field="owner_id")


async def _check_external_ref(
    session: AsyncSession, source: str | None, external_id: str | None, exclude_id: int | None = None
) -> None:
    if (source is None) != (external_id is None):
        raise InvalidInput(
            "source and external_id go together: send both or neither",
            code="incomplete_external_ref",
            field="external_id",
        )
    if source is None:
        return
    stmt = select(Item.id).where(Item.source == source, Item.external_id == external_id)
    if exclude_id is not None:
        stmt = stmt.where(Item.id != exclude_id)
    other = await session.scalar(stmt)
    if other is not None:
        raise Conflict(
            f"An item from {source!r} with external id {external_id!r} exists",
            code="duplicate_external_id",
            item_id=other,
        )


def _item_summary(item: Item) -> dict[str, Any]:
    def iso(v: Any) -> Any:
        return v.isoformat() if v is not None else None

    return {
        "item_type": item.item_type,
        "owner_id": item.owner_id,
        "visibility": item.visibility,
        "valid_from": iso(item.valid_from),
        "valid_to": iso(item.valid_to),
        "review_due": iso(item.review_due),
        "source": item.source,
        "external_id": item.external_id,
    }


async def create_item(session: AsyncSession, actor: Principal, data: ItemCreate) -> tuple[Item, ItemVersion]:
    """A new item with its first version, a draft."""
    item_type = await taxonomy.get_item_type(session, data.item_type)
    check_validity(data.valid_from, data.valid_to)
    await _check_external_ref(session, data.source, data.external_id)
    owner_id = data.owner_id if data.owner_id is not None else user_id(actor)
    await _check_owner(session, owner_id)
    item = Item(
        item_type=item_type.code,
        owner_id=owner_id,
        status="draft",
        visibility=data.visibility,
        valid_from=data.valid_from,
        valid_to=data.valid_to,
        review_due=data.review_due,
        source=data.source,
        external_id=data.external_id,
        latest_version_no=1,
        created_by=user_id(actor),
    )
    session.add(item)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("An item with that source and external id exists", code="duplicate_external_id")
    version = ItemVersion(
        item_id=item.id,
        number=1,
        state="draft",
        title=data.title,
        question="",
        similar_questions=[],
        body="",
        body_format="html",
        channel_answers={},
        channels=list(CHANNELS),
        attributes={},
        change_note="",
        author_id=user_id(actor),
        categories=[],
        tags=[],
        attachments=[],
    )
    await apply_content(session, actor, item, version, data)
    session.add(version)
    await acl.refresh_readers(session, [item.id])
    if not await acl.can_edit(session, actor, item):
        raise Forbidden(
            "Edit grants on these categories do not include you", code="category_not_editable", field="category_ids"
        )
    record(session, actor, "item.create", "item", item.id, after={**_item_summary(item), "title": version.title})
    await session.commit()
    return item, version


async def update_item(session: AsyncSession, actor: Principal, item: Item, data: ItemUpdate) -> Item:
    """Item fields: owner, visibility, validity window, review date, type, external reference."""
    ensure_not_archived(item)
    sent = data.model_fields_set
    for name in ("item_type", "visibility"):
        if name in sent and getattr(data, name) is None:
            raise InvalidInput(f"{name} cannot be null", code="field_required", field=name)
    before = _item_summary(item)
    async with write_guard(session, item.id):
        if "item_type" in sent and data.item_type != item.item_type:
            new_type = await taxonomy.get_item_type(session, data.item_type or "")
            latest = await latest_version(session, item)
            if latest.state in OPEN_STATES:  # the open version must fit the new template
                latest.attributes = taxonomy.validate_attribute_values(
                    await attribute_defs(session, new_type.code), dict(latest.attributes), for_publish=False
                )
            item.item_type = new_type.code
        if "owner_id" in sent:
            await _check_owner(session, data.owner_id)
            item.owner_id = data.owner_id
        if "visibility" in sent and data.visibility:
            item.visibility = data.visibility
        valid_from = data.valid_from if "valid_from" in sent else item.valid_from
        valid_to = data.valid_to if "valid_to" in sent else item.valid_to
        check_validity(valid_from, valid_to)
        item.valid_from, item.valid_to = valid_from, valid_to
        if "review_due" in sent:
            item.review_due = data.review_due
        if {"source", "external_id"} & sent:
            source = data.source if "source" in sent else item.source
            external_id = data.external_id if "external_id" in sent else item.external_id
            await _check_external_ref(session, source, external_id, exclude_id=item.id)
            item.source, item.external_id = source, external_id
        after = _item_summary(item)
        item.updated_at = utcnow()
        await session.flush()
        if before["visibility"] != after["visibility"]:
            await acl.refresh_readers(session, [item.id])
        await reconcile(session, [item.id])  # visibility, validity or external id: what channels show
        record(session, actor, "item.update", "item", item.id, **changes(before, after))
        enqueue(session, "search.index_item", {"item_id": item.id})
        await session.commit()
    return item


async def save_draft(session: AsyncSession, actor: Principal, item: Item, data: ContentFields) -> ItemVersion:
    """Edit the open draft, creating it from the latest version when none is open."""
    ensure_not_archived(item)
    async with write_guard(session, item.id):
        latest = await latest_version(session, item)
        ensure_unlocked(latest, "edit it again")
        created = latest.state not in OPEN_STATES
        reopened = latest.state == "rejected"
        if created:
            draft = copy_version(latest, latest.number + 1, actor)
            item.latest_version_no = draft.number
        else:
            draft = latest
            draft.state = "draft"
        changed = await apply_content(session, actor, item, draft, data)
        if created:
            session.add(draft)
        draft.updated_at = item.updated_at = utcnow()
        await session.flush()
        if "categories" in changed and item.published_version_id is None:
            await acl.refresh_readers(session, [item.id])
        record(
            session,
            actor,
            "item.draft_save",
            "item",
            item.id,
            version=draft.number,
            fields=changed,
            created=created,
            reopened=reopened,
        )
        await session.commit()
    return draft


DISCARDABLE_STATES = ("draft", "rejected")


async def _discardable(session: AsyncSession, item: Item) -> ItemVersion:
    """The item's open version, when it may be thrown away (not in review, not approved)."""
    latest = await latest_version(session, item)
    ensure_unlocked(latest)
    if latest.state not in DISCARDABLE_STATES:
        raise NotFound("This item has no draft", code="no_draft")
    return latest


async def discard_draft(session: AsyncSession, actor: Principal, item: Item) -> ItemVersion:
    """Delete the open draft; returns the version that is the latest again."""
    ensure_not_archived(item)
    async with write_guard(session, item.id):
        draft = await _discardable(session, item)
        if draft.number == 1:
            raise Conflict(
                "This draft is the item's only version: delete the item instead",
                code="only_version",
                hint=f"DELETE /api/v1/items/{item.id}",
            )
        await session.delete(draft)
        item.latest_version_no = draft.number - 1
        item.updated_at = utcnow()
        await session.flush()
        if item.published_version_id is None:  # readers follow the latest version's categories
            await acl.refresh_readers(session, [item.id])
        record(session, actor, "item.draft_discard", "item", item.id, version=draft.number, title=draft.title)
        await session.commit()
    return await latest_version(session, item)


async def delete_item(session: AsyncSession, actor: Principal, item: Item) -> None:
    """Delete an item that only ever had one draft (never submitted or published)."""
    async with write_guard(session, item.id):
        latest = await latest_version(session, item)
        if latest.number != 1 or latest.state not in OPEN_STATES:
            raise Conflict(
                "Only an item that was never published can be deleted; discard its draft, unpublish "
                "or archive it instead",
                code="item_not_deletable",
                versions=latest.number,
            )
        draft = await _discardable(session, item)  # in review or approved: withdraw first
        record(
            session,
            actor,
            "item.delete",
            "item",
            item.id,
            title=draft.title,
            item_type=item.item_type,
            external_id=item.external_id,
        )
        # Grants name their target without a foreign key; versions, readers and attachments cascade.
        await session.execute(delete(AclGrant).where(AclGrant.target_type == "item", AclGrant.target_id == item.id))
        await session.execute(delete(Item).where(Item.id == item.id))
        await reconcile(session, [item.id])  # never published, so normally nothing to say
        await session.commit()


async def restore_version(
    session: AsyncSession, actor: Principal, item: Item, number: int, change_note: str | None, replace: bool
) -> ItemVersion:
    """A new draft holding the content of version `number` (see the module docstring)."""
    ensure_not_archived(item)
    async with write_guard(session, item.id):
        source = await version_no(session, item, number)
        latest = await latest_version(session, item)
        ensure_unlocked(latest)
        if latest.state in OPEN_STATES and not replace:
            raise Conflict(
                f"Version {latest.number} is an open draft; edit it, or restore with replace=true to overwrite it",
                code="draft_open",
                version=latest.number,
            )
        fresh = copy_version(source, latest.number + 1, actor)
        fresh.attributes = taxonomy.validate_attribute_values(
            await attribute_defs(session, item.item_type), dict(source.attributes), for_publish=False
        )
        if latest.state in OPEN_STATES:  # replace the open draft's content, keep its number
            draft = latest
            for f in CONTENT_FIELDS:
                setattr(draft, f, getattr(fresh, f))
            draft.categories, draft.tags, draft.state = list(fresh.categories), list(fresh.tags), "draft"
            draft.attachments = list(fresh.attachments)
        else:
            draft = fresh
            item.latest_version_no = draft.number
            session.add(draft)
        draft.restored_from = number
        draft.change_note = change_note or f"恢复自版本 {number} (restored from version {number})"
        draft.updated_at = item.updated_at = utcnow()
        await session.flush()
        if item.published_version_id is None:
            await acl.refresh_readers(session, [item.id])
        record(
            session,
            actor,
            "item.restore",
            "item",
            item.id,
            version=draft.number,
            restored_from=number,
            replaced=latest.state in OPEN_STATES,
        )
        await session.commit()
    return draft


# ---------------------------------------------------------------- lists


def _attr_condition(dialect: str, code: str, value: str | int | float) -> Any:
    """The served version's attribute `code` equals `value` or (a list) contains it."""
    if dialect == "postgresql":
        col = ItemVersion.attributes
        return or_(
            *(
                col.bool_op("@>")(cast(literal(json.dumps({code: v}, ensure_ascii=False)), JSONB))
                for v in (value, [value])
            )
        )
    each = func.json_each(ItemVersion.attributes, f'$."{code}"').table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == value))


async def _attr_filters(session: AsyncSession, attrs: dict[str, str]) -> list[Any]:
    if not attrs:
        return []
    defs = {
        d.code: d
        for d in (await session.scalars(select(AttributeDefinition).where(AttributeDefinition.code.in_(attrs)))).all()
    }
    unknown = sorted(set(attrs) - set(defs))
    if unknown:
        raise InvalidInput(f"Unknown attributes: {', '.join(unknown)}", code="unknown_attribute", unknown=unknown)
    dialect = session.bind.dialect.name
    out = []
    for code, raw in attrs.items():
        value: str | int | float = raw
        if defs[code].type == "number":
            try:
                value = float(raw)
            except ValueError:
                raise InvalidInput(
                    f"attr.{code} must be a number", code="invalid_attribute_filter", field=f"attr.{code}"
                )
            value = int(value) if value.is_integer() else value
        out.append(_attr_condition(dialect, code, value))
    return out


async def list_items(
    session: AsyncSession,
    principal: Principal,
    page: PageParams,
    *,
    item_type: str | None = None,
    status: str | None = None,
    state: str | None = None,
    category_id: int | None = None,
    tag: str | None = None,
    owner_id: int | None = None,
    valid_at: datetime | None = None,
    updated_since: datetime | None = None,
    q: str | None = None,
    attrs: dict[str, str] | None = None,
) -> tuple[list[tuple[Item, ItemVersion]], str | None]:
    """Editors list every item they may read (with its latest version); readers the published,
    currently valid ones shown on their channel. Filters apply to the version listed."""
    editor = is_editor(principal)
    if editor:
        join_on = and_(ItemVersion.item_id == Item.id, ItemVersion.number == Item.latest_version_no)
        stmt = select(Item).join(ItemVersion, join_on).where(acl.read_filter(principal))
    else:
        stmt = (
            select(Item)
            .join(ItemVersion, ItemVersion.id == Item.published_version_id)
            .where(acl.visible_filter(principal), acl.channel_filter(acl.channel_of(principal)))
        )
    if item_type:
        stmt = stmt.where(Item.item_type == item_type)
    if status:
        stmt = stmt.where(Item.status == status)
    if state:
        stmt = stmt.where(ItemVersion.state == state)
    if category_id is not None:
        await taxonomy.validate_node_ids(session, [category_id])
        nodes = await taxonomy.subtree_ids(session, [category_id])
        stmt = stmt.where(
            exists().where(version_categories.c.version_id == ItemVersion.id, version_categories.c.node_id.in_(nodes))
        )
    if tag:
        stmt = stmt.where(
            exists().where(
                version_tags.c.version_id == ItemVersion.id, version_tags.c.tag_id == Tag.id, Tag.name == tag
            )
        )
    if owner_id is not None:
        stmt = stmt.where(Item.owner_id == owner_id)
    if valid_at is not None:
        stmt = stmt.where(acl.valid_filter(valid_at))
    if updated_since is not None:
        stmt = stmt.where(Item.updated_at >= updated_since)
    if q:
        stmt = stmt.where(ItemVersion.title.ilike(like_pattern(q), escape="\\"))
    for cond in await _attr_filters(session, attrs or {}):
        stmt = stmt.where(cond)
    items, nxt = await paginate_by_id(session, stmt, Item.id, page)
    if not items:
        return [], nxt
    ids = [i.id for i in items]
    if editor:
        vstmt = select(ItemVersion).join(
            Item, and_(Item.id == ItemVersion.item_id, Item.latest_version_no == ItemVersion.number)
        )
    else:
        vstmt = select(ItemVersion).join(Item, Item.published_version_id == ItemVersion.id)
    by_item = {v.item_id: v for v in (await session.scalars(vstmt.where(Item.id.in_(ids)))).all()}
    return [(i, by_item[i.id]) for i in items if i.id in by_item], nxt


async def list_versions(
    session: AsyncSession, principal: Principal, item: Item, page: PageParams
) -> tuple[list[ItemVersion], str | None]:
    stmt = select(ItemVersion).where(ItemVersion.item_id == item.id)
    if not sees_open_versions(principal, item):
        served = await served_version(session, principal, item)
        stmt = stmt.where(ItemVersion.id == (served.id if served else -1))
    return await paginate_by_id(session, stmt, ItemVersion.id, page)


async def get_version(session: AsyncSession, principal: Principal, item: Item, number: int) -> ItemVersion:
    """Editors read any version; readers only the one served to them."""
    version = await version_no(session, item, number)
    if not sees_open_versions(principal, item):
        served = await served_version(session, principal, item)
        if served is None or served.id != version.id:
            raise NotFound(f"Item {item.id} has no version {number}", code="version_not_found")
    return version
