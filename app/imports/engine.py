"""Running an import: scan, apply in batches, archive, finish. Runs in the worker (job `imports.run`).

1. **Scan** (state `scanning`): reads the whole file once without touching content. The header
   is checked (a missing required column fails the job before any write); every external id goes
   into `import_keys`, which finds ids repeated in the file (the later rows fail, naming the first)
   and lets a full sync count what it would archive: beyond the source's `max_archive_share` the
   job stops in `needs_confirmation` unless `confirm_mass_archive=true`, having written nothing.
2. **Apply** (state `running`): rows in batches of `BATCH`, one transaction each. The batch's
   items, versions, read sets, change-feed events, audit entries, index jobs and the job's own
   progress (`last_row`, counts, row errors) commit together: a worker killed mid-import resumes
   after the last committed batch, and nothing is applied twice or lost. An unchanged row (same
   content hash as the last time this source wrote the item) costs no version and no index job.
3. **Archive** (full sync): items of the source the file did not name are archived, never deleted,
   and listed in the report.

A dry run does all of the above inside transactions that are rolled back: the same checks, the
same counts, nothing written but the job's report.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import and_, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from app.audit.service import entry_values, record, record_many
from app.channels.changes import reconcile
from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import AppError
from app.identity.models import User
from app.identity.principal import Principal
from app.imports import attachments as zip_attachments
from app.imports.columns import (
    ANSWER_PREFIX,
    ATTR_PREFIX,
    RowData,
    RowError,
    missing_columns,
    parse_row,
    split_cell,
    unknown_columns,
)
from app.imports.formats import ImportFileError, Limits, Row, open_reader
from app.imports.models import COUNTS, ImportJob, ImportKey, ImportOutcome, ImportRowError, SyncRecord, SyncSource
from app.knowledge import acl, workflow
from app.knowledge import service as knowledge
from app.knowledge.models import OPEN_STATES, Item, ItemVersion, version_categories, version_tags
from app.knowledge.schemas import CHANNELS, ContentFields
from app.taxonomy import service as taxonomy
from app.taxonomy.models import AttributeDefinition, Tag, Taxonomy, TaxonomyNode
from app.workers.outbox import enqueue, enqueue_many

log = logging.getLogger("app.imports")

BATCH = 500
SCAN_BATCH = 2000
ARCHIVE_BATCH = 200
MAX_ERRORS = 100_000  # row errors kept per job; the counts stay exact beyond it
INDEX_JOB = "search.index_item"


def import_actor(job: ImportJob) -> Principal:
    """Who the worker acts for: the caller who uploaded the file (audit, authorship)."""
    kind, _, raw_id = job.created_by.partition(":")
    return Principal(
        kind=kind or "system", id=int(raw_id) if raw_id.isdigit() else 0, name=job.created_by, permissions=frozenset()
    )


class JobFailed(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.extra = code, message, extra


# ---------------------------------------------------------------- lookups shared by a batch


@dataclass
class Lookups:
    """Categories, tags, users and templates resolved once per job. Only ids are kept across batches
    (each batch has its own session); a batch that is rolled back (a dry run, a failure) forgets
    what it created."""

    source: SyncSource
    taxonomy_id: int | None
    nodes: dict[str, int] = field(default_factory=dict)  # path or id token -> node id
    tags: dict[str, int] = field(default_factory=dict)  # name as sent -> tag id
    users: dict[str, int | None] = field(default_factory=dict)
    templates: dict[str, list[AttributeDefinition] | None] = field(default_factory=dict)

    batch_objects: dict[tuple[str, str], Any] = field(default_factory=dict)  # this batch's session only

    def new_batch(self) -> None:
        self.batch_objects.clear()

    async def node(self, session: AsyncSession, token: str) -> TaxonomyNode:
        cached = self.batch_objects.get(("node", token))
        if cached is not None:
            return cached
        node_id = self.nodes.get(token)
        found = await session.get(TaxonomyNode, node_id) if node_id is not None else None
        node = found or await self._resolve(session, token)
        self.nodes[token] = node.id
        self.batch_objects[("node", token)] = node
        return node

    async def _resolve(self, session: AsyncSession, token: str) -> TaxonomyNode:
        if token.isdigit():
            found = await session.get(TaxonomyNode, int(token))
            if found is None:
                raise RowError(f"category {token} does not exist", "unknown_category", "categories")
            return found
        names = [p.strip() for p in token.strip("/").split("/") if p.strip()]
        if not names or self.taxonomy_id is None:
            raise RowError(
                f"category path {token!r} cannot be resolved: the source has no taxonomy",
                "unknown_category",
                "categories",
            )
        if len(names) > taxonomy.MAX_DEPTH:
            raise RowError(
                f"category path {token!r} is deeper than {taxonomy.MAX_DEPTH} levels", "too_deep", "categories"
            )
        parent: TaxonomyNode | None = None
        for depth, name in enumerate(names, start=1):
            key = "/".join(names[:depth])
            under = TaxonomyNode.parent_id == parent.id if parent else TaxonomyNode.parent_id.is_(None)
            node = await session.scalar(
                select(TaxonomyNode).where(
                    TaxonomyNode.taxonomy_id == self.taxonomy_id, TaxonomyNode.name == name, under
                )
            )
            if node is None:
                if not self.source.create_categories:
                    raise RowError(
                        f"category {key!r} does not exist (the source's policy does not create categories)",
                        "unknown_category",
                        "categories",
                    )
                if len(name) > 100:
                    raise RowError(f"category name {name[:20]}… has more than 100 characters", "too_long", "categories")
                position = await session.scalar(
                    select(func.count())
                    .select_from(TaxonomyNode)
                    .where(TaxonomyNode.taxonomy_id == self.taxonomy_id, under)
                )
                node = TaxonomyNode(
                    taxonomy_id=self.taxonomy_id,
                    parent_id=parent.id if parent else None,
                    name=name,
                    position=position or 0,
                    path="/",
                )
                session.add(node)
                await session.flush()
                node.path = f"{parent.path if parent else '/'}{node.id}/"
                taxonomy.forget_node_names()
            parent = node
        assert parent is not None
        return parent

    async def tag_list(self, session: AsyncSession, names: list[str]) -> list[Tag]:
        out: dict[int, Tag] = {}
        missing = []
        for name in names:
            tag = self.batch_objects.get(("tag", name))
            if tag is None and name in self.tags:
                tag = await session.get(Tag, self.tags[name])
            if tag is None:
                missing.append(name)
            else:
                out[tag.id] = tag
                self.batch_objects[("tag", name)] = tag
        if missing:
            try:
                found = await taxonomy.resolve_tags(session, missing, create_missing=self.source.create_tags)
            except AppError as e:
                raise RowError(e.detail or "invalid tags", e.code, "tags")
            by_name = {t.name: t for t in found}
            for name in missing:
                tag = by_name.get(taxonomy.normalize_tag(name) or "")
                if tag is not None:
                    self.tags[name] = tag.id
                    self.batch_objects[("tag", name)] = tag
                    out[tag.id] = tag
        return list(out.values())

    async def user_id(self, session: AsyncSession, name: str) -> int:
        if name not in self.users:
            self.users[name] = await session.scalar(select(User.id).where(User.username == name))
        found = self.users[name]
        if found is None:
            raise RowError(f"no user named {name!r}", "unknown_owner", "owner")
        return found

    async def template(self, session: AsyncSession, item_type: str) -> list[AttributeDefinition]:
        if item_type not in self.templates:
            try:
                await taxonomy.get_item_type(session, item_type)
                self.templates[item_type] = await taxonomy.template_for_type(session, item_type)
            except AppError:
                self.templates[item_type] = None
        defs = self.templates[item_type]
        if defs is None:
            raise RowError(f"unknown item type {item_type!r}", "unknown_item_type", "item_type")
        return defs

    def forget_created(self) -> None:
        """After a rollback: what this batch created is gone; everything else stays valid."""
        self.nodes.clear()
        self.tags.clear()
        self.batch_objects.clear()


async def default_taxonomy(session: AsyncSession, source: SyncSource) -> int | None:
    if source.taxonomy_id is not None:
        return source.taxonomy_id
    return await session.scalar(select(Taxonomy.id).order_by(Taxonomy.id).limit(1))


# ---------------------------------------------------------------- one batch


@dataclass
class BatchResult:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    errors: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, row: int, external_id: str | None, code: str, message: str, field_: str | None) -> None:
        self.counts["failed"] += 1
        self.errors.append(
            {"row": row, "external_id": external_id, "code": code, "message": message[:2000], "field": field_}
        )


def _content(row: RowData) -> ContentFields:
    """The content columns as the editors' API takes them: the same sanitizing and normalizing."""
    f = row.fields
    data: dict[str, Any] = {
        k: f[k] for k in ("title", "question", "similar_questions", "body", "body_format", "channels") if k in f
    }
    if "title" in data and not data["title"]:
        raise RowError("title is empty", "field_required", "title")
    if data.get("channels") == []:
        raise RowError("channels is empty: name at least one of " + ", ".join(CHANNELS), "field_required", "channels")
    if "body_format" in data and not data["body_format"]:
        del data["body_format"]
    answers = {k[len(ANSWER_PREFIX) :]: v for k, v in f.items() if k.startswith(ANSWER_PREFIX)}
    if answers:
        data["channel_answers"] = answers
    try:
        return ContentFields.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        name = f"answer.{err['loc'][1]}" if loc.startswith("channel_answers.") else (str(err["loc"][0]) or None)
        raise RowError(f"{name}: {err['msg']}", "invalid_value", name)


@dataclass
class Content:
    """A new item's first version while it is checked: the fields `apply_content` and `snapshot` use,
    without the ORM's bookkeeping (a fifth of the import's time when it was an ItemVersion)."""

    number: int = 1
    state: str = "draft"
    title: str = ""
    question: str = ""
    similar_questions: list[str] = field(default_factory=list)
    body: str = ""
    body_format: str = "html"
    channel_answers: dict[str, str] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    change_note: str = ""
    author_id: int | None = None
    categories: list[Any] = field(default_factory=list)
    tags: list[Any] = field(default_factory=list)
    attachments: list[Any] = field(default_factory=list)

    def version(self) -> ItemVersion:
        return ItemVersion(**{f: getattr(self, f) for f in self.__dataclass_fields__})


@dataclass(eq=False)
class Plan:
    """A validated row, ready to write: nothing of it touched the database yet (but for categories
    and tags the source's policy creates)."""

    row: RowData
    digest: str
    item: Item | None  # None: a new item
    record: SyncRecord | None
    content: ItemVersion | Content  # detached: the new content
    target: ItemVersion | None  # the sync's own open version to overwrite, or None for a new version
    item_fields: dict[str, Any]
    created: bool
    version: ItemVersion | None = None  # the version written
    item_id: int | None = None  # the item written


# Database errors a single row can cause (a concurrent writer, a value the database refuses): the
# batch is retried one row per savepoint to find it. Anything else (the database is down) fails
# the attempt, and the worker retries from the last committed batch.
ROW_DB_ERRORS = (IntegrityError, DataError, StaleDataError)


class Applier:
    """Applies rows of one job."""

    def __init__(
        self,
        job: ImportJob,
        source: SyncSource,
        actor: Principal,
        tz: ZoneInfo,
        attachments: zip_attachments.ZipFiles | None,
    ) -> None:
        self.job, self.source, self.actor, self.tz = job, source, actor, tz
        self.attachments = attachments
        self.lookups: Lookups | None = None

    async def batch(
        self, session: AsyncSession, rows: list[Row], result: BatchResult, *, isolate: bool = False
    ) -> set[int]:
        """Apply `rows` in the caller's transaction; returns the ids of the items written. With
        `isolate`, each row in its own savepoint (slow; after a batch failed on a database error)."""
        if self.lookups is None:
            self.lookups = Lookups(self.source, await default_taxonomy(session, self.source))
        self.lookups.new_batch()
        parsed: list[RowData] = []
        for r in rows:
            if r.error:
                result.fail(r.number, None, "unreadable_row", r.error, None)
                continue
            try:
                parsed.append(parse_row(r.number, r.values, self.tz))
            except RowError as e:
                ext = r.values.get("external_id")
                result.fail(r.number, str(ext)[:200] if ext not in (None, "") else None, e.code, e.message, e.field)
        if not parsed:
            return set()
        ids = [p.external_id for p in parsed]
        first_rows = dict(
            (
                await session.execute(
                    select(ImportKey.external_id, ImportKey.row).where(
                        ImportKey.import_id == self.job.id, ImportKey.external_id.in_(ids)
                    )
                )
            ).all()
        )
        parsed = [p for p in parsed if first_rows.get(p.external_id, p.number) == p.number]  # repeats: reported
        digests: dict[str, str] = {}
        hashed = []
        for row in parsed:
            try:
                files = await self.attachments.hashes(row.fields.get("attachments", [])) if self.attachments else []
            except RowError as e:  # a file the manifest names is missing
                result.fail(row.number, row.external_id, e.code, e.message, e.field)
                continue
            digests[row.external_id] = row.content_hash(files)
            hashed.append(row)
        parsed = hashed
        # The cheap question first (a nightly re-import is mostly unchanged rows): which rows changed?
        current = (
            await session.execute(
                select(Item.external_id, Item.status, SyncRecord.content_hash)
                .outerjoin(SyncRecord, SyncRecord.item_id == Item.id)
                .where(Item.source == self.source.name, Item.external_id.in_(ids))
            )
        ).all()
        same = {
            ext
            for ext, item_status, digest in current
            if digest is not None and item_status != "archived" and digest == digests.get(ext)
        }
        deleting = {p.external_id for p in parsed if p.action == "delete"}
        for row in parsed:
            if row.external_id in same and row.action != "delete":
                result.counts["unchanged"] += 1
        parsed = [p for p in parsed if p.external_id not in same or p.action == "delete"]
        wanted = [ext for ext, _, _ in current if ext not in same or ext in deleting]
        known = (
            {
                i.external_id: (i, rec)
                for i, rec in (
                    await session.execute(
                        select(Item, SyncRecord)
                        .outerjoin(SyncRecord, SyncRecord.item_id == Item.id)
                        .where(Item.source == self.source.name, Item.external_id.in_(wanted))
                    )
                ).all()
            }
            if wanted
            else {}
        )
        # Latest versions of the items that change, with their categories, tags and attachments: a few
        # queries for the batch instead of four per row.
        changing = [i.id for ext, (i, rec) in known.items() if ext not in deleting]
        latest: dict[int, ItemVersion] = {}
        if changing:
            latest = {
                v.item_id: v
                for v in (
                    await session.scalars(
                        select(ItemVersion)
                        .join(Item, and_(Item.id == ItemVersion.item_id, ItemVersion.number == Item.latest_version_no))
                        .where(Item.id.in_(changing))
                    )
                ).all()
            }
        written: set[int] = set()
        plans: list[Plan] = []
        for row in parsed:
            item, rec = known.get(row.external_id, (None, None))
            try:
                if isolate:
                    async with session.begin_nested():
                        outcome = await self._row(session, row, digests[row.external_id], item, rec, latest)
                else:
                    outcome = await self._row(session, row, digests[row.external_id], item, rec, latest)
            except (RowError, AppError, *ROW_DB_ERRORS) as e:
                if isinstance(e, ROW_DB_ERRORS) and not isolate:
                    raise
                result.fail(row.number, row.external_id, *_row_failure(e))
                continue
            if isinstance(outcome, Plan):
                plans.append(outcome)
                continue
            result.counts[outcome] += 1
            if outcome == "deleted" and item is not None:
                written.add(item.id)
                result.outcomes.append({"action": "deleted", "item_id": item.id, "external_id": row.external_id})
        if isolate:  # one savepoint per row: the row the database refuses fails alone
            done = []
            for plan in plans:
                try:
                    async with session.begin_nested():
                        await self._write(session, [plan])
                    done.append(plan)
                except ROW_DB_ERRORS as e:
                    result.fail(plan.row.number, plan.row.external_id, *_row_failure(e))
            plans = done
        elif plans:
            await self._write(session, plans)
        for plan in plans:
            result.counts["created" if plan.created else "updated"] += 1
            assert plan.item_id is not None
            written.add(plan.item_id)
        if written:
            await acl.refresh_readers(session, written)
            await reconcile(session, written)
            await enqueue_many(
                session, INDEX_JOB, [{"item_id": i} for i in sorted(written)], created_by=self.actor.actor
            )
        return written

    async def _row(
        self,
        session: AsyncSession,
        row: RowData,
        digest: str,
        item: Item | None,
        rec: SyncRecord | None,
        latest: dict[int, ItemVersion],
    ) -> str | Plan:
        if row.action == "delete":
            if item is None or item.status == "archived":
                return "unchanged"
            await archive_item(session, self.actor, item, self.job, "deleted by the source")
            return "deleted"
        if "attachments" in row.fields and self.attachments is None:
            raise RowError(
                "attachments are only for ZIP imports (a manifest plus the files)",
                "attachments_need_zip",
                "attachments",
            )
        if item is not None and rec is not None and rec.content_hash == digest and item.status != "archived":
            return "unchanged"
        plan = await self._prepare(session, row, digest, item, rec, latest.get(item.id) if item else None)
        return "unchanged" if plan is None else plan

    async def _prepare(
        self,
        session: AsyncSession,
        row: RowData,
        digest: str,
        item: Item | None,
        rec: SyncRecord | None,
        base: ItemVersion | None,
    ) -> Plan | None:
        """Everything that can fail a row, checked before anything is written."""
        assert self.lookups is not None
        f = row.fields
        target: ItemVersion | None = None
        if item is not None:
            assert base is not None
            if base.state in OPEN_STATES:
                if rec is None or rec.version_no != base.number:
                    raise RowError(
                        f"version {base.number} of this item is {base.state}, opened by an editor; the "
                        "sync does not overwrite it (publish or discard it, then send the row again)",
                        "draft_open",
                    )
                target = base  # the source's own proposal, still in review: replaced
        elif not f.get("title"):
            raise RowError("title is required for a new item", "field_required", "title")
        item_type = f.get("item_type") or (item.item_type if item else self.source.item_type)
        defs = await self.lookups.template(session, item_type)
        fields: dict[str, Any] = {"item_type": item_type}
        if item is None or "visibility" in f:
            fields["visibility"] = f.get("visibility") or self.source.visibility
        for name in ("valid_from", "valid_to"):
            if name in f:
                fields[name] = datetime.fromisoformat(f[name]) if f[name] else None
        if item is not None and item.status == "archived" and "valid_to" not in f:
            fields["valid_to"] = None  # revived: an old end date would hide it again
        valid_from = fields.get("valid_from", item.valid_from if item else None)
        valid_to = fields.get("valid_to", item.valid_to if item else None)
        if valid_from is not None and valid_to is not None and valid_to <= valid_from:
            raise RowError("valid_to must be after valid_from", "invalid_validity", "valid_to")
        if "review_due" in f:
            fields["review_due"] = datetime.fromisoformat(f["review_due"]).date() if f["review_due"] else None
        if "owner" in f:
            fields["owner_id"] = await self.lookups.user_id(session, f["owner"]) if f["owner"] else None
        scratch: Any = SimpleNamespace(item_type=item_type)  # apply_content reads only the type
        content: Any = (
            knowledge.copy_version(base, (base.number if target is None else base.number - 1) + 1, self.actor)
            if base is not None
            else Content(channels=list(self.source.channels or CHANNELS), author_id=knowledge.user_id(self.actor))
        )
        await knowledge.apply_content(session, self.actor, scratch, content, _content(row))
        # An empty cell of an attribute the item's type does not have is no value, not an unknown
        # attribute: a sheet of several item types has the columns of all of them.
        codes = {d.code for d in defs}
        attrs = {
            k[len(ATTR_PREFIX) :]: v
            for k, v in f.items()
            if k.startswith(ATTR_PREFIX) and (k[len(ATTR_PREFIX) :] in codes or v not in (None, "", []))
        }
        multi = {d.code for d in defs if d.type == "multi_enum"}
        attrs = {k: split_cell(v) if k in multi else v for k, v in attrs.items()}
        try:
            content.attributes = taxonomy.validate_attribute_values(
                defs, {**dict(content.attributes or {}), **attrs}, for_publish=True
            )
        except AppError as e:
            errors = e.extra.get("errors") or [{}]
            name = str(errors[0].get("field") or "").replace("attributes.", ATTR_PREFIX) or None
            raise RowError(e.detail or "invalid attribute", e.code, name)
        # Last, since the policy may create them: categories and tags.
        if "categories" in f:
            nodes = [await self.lookups.node(session, token) for token in f["categories"]]
            content.categories = list({n.id: n for n in nodes}.values())
        if "tags" in f:
            content.tags = await self.lookups.tag_list(session, f["tags"])
        if item is not None and target is None and "attachments" not in f:
            same_item = all(getattr(item, k) == v for k, v in fields.items()) and item.status != "archived"
            if same_item and knowledge.snapshot(content) == knowledge.snapshot(base):
                await _remember(session, item.id, self.source.name, digest, rec, base.number)
                return None  # the first sync of an item that already says this
        return Plan(row, digest, item, rec, content, target, fields, created=item is None)

    async def _write(self, session: AsyncSession, plans: list[Plan]) -> None:
        fresh: list[Plan] = []
        rest: list[Plan] = []
        for p in plans:
            (fresh if p.item is None and "attachments" not in p.row.fields else rest).append(p)
        if fresh:
            await self._insert_new(session, fresh)
        if rest:
            await self._write_orm(session, rest)

    async def _insert_new(self, session: AsyncSession, plans: list[Plan]) -> None:
        """New items in a handful of multi-row INSERTs for the whole batch: the ORM would insert
        them one row at a time (SQLite cannot return generated ids of a multi-row insert in order,
        so we return the natural keys with them)."""
        now, publish = utcnow(), self.source.publish_mode == "publish"
        author = knowledge.user_id(self.actor)
        items_t, versions_t = Item.__table__, ItemVersion.__table__
        item_rows = [
            {
                "item_type": p.item_fields["item_type"],
                "owner_id": p.item_fields.get("owner_id"),
                "status": "published" if publish else "draft",
                "visibility": p.item_fields["visibility"],
                "valid_from": p.item_fields.get("valid_from"),
                "valid_to": p.item_fields.get("valid_to"),
                "review_due": p.item_fields.get("review_due"),
                "source": self.source.name,
                "external_id": p.row.external_id,
                "latest_version_no": 1,
                "row_version": 1,
                "created_by": author,
                "created_at": now,
                "updated_at": now,
            }
            for p in plans
        ]
        ids = dict(
            (await session.execute(insert(items_t).returning(items_t.c.external_id, items_t.c.id), item_rows)).all()
        )
        note = f"导入 import #{self.job.id} ({self.source.name})"
        version_rows = []
        for p in plans:
            c = p.content
            version_rows.append(
                {
                    "item_id": ids[p.row.external_id],
                    "number": 1,
                    "state": "published" if publish else "in_review",
                    "title": c.title,
                    "question": c.question,
                    "similar_questions": list(c.similar_questions),
                    "body": c.body,
                    "body_format": c.body_format,
                    "channel_answers": dict(c.channel_answers),
                    "channels": list(c.channels),
                    "attributes": dict(c.attributes),
                    "change_note": note,
                    "author_id": author,
                    "created_at": now,
                    "updated_at": now,
                    "submitted_at": None if publish else now,
                    "published_at": now if publish else None,
                    "published_by": author if publish else None,
                }
            )
        version_of = dict(
            (
                await session.execute(insert(versions_t).returning(versions_t.c.item_id, versions_t.c.id), version_rows)
            ).all()
        )
        cats = [
            {"version_id": version_of[ids[p.row.external_id]], "node_id": n.id}
            for p in plans
            for n in p.content.categories
        ]
        tags = [
            {"version_id": version_of[ids[p.row.external_id]], "tag_id": t.id} for p in plans for t in p.content.tags
        ]
        if cats:
            await session.execute(insert(version_categories), cats)
        if tags:
            await session.execute(insert(version_tags), tags)
        if publish:
            await session.execute(
                update(items_t)
                .where(items_t.c.id == bindparam("b_id"))
                .values(published_version_id=bindparam("b_version")),
                [{"b_id": item_id, "b_version": version_id} for item_id, version_id in version_of.items()],
            )
        await session.execute(
            insert(SyncRecord.__table__),
            [
                {
                    "item_id": ids[p.row.external_id],
                    "source": self.source.name,
                    "content_hash": p.digest,
                    "version_no": 1,
                    "updated_at": now,
                }
                for p in plans
            ],
        )
        await record_many(
            session,
            [
                entry_values(
                    self.actor,
                    "item.import",
                    "item",
                    ids[p.row.external_id],
                    import_id=self.job.id,
                    source=self.source.name,
                    external_id=p.row.external_id,
                    version=1,
                    outcome="created",
                    state="published" if publish else "in_review",
                )
                for p in plans
            ],
        )
        for p in plans:
            p.item_id = ids[p.row.external_id]

    async def _write_orm(self, session: AsyncSession, plans: list[Plan]) -> None:
        """Changed items (and new ones with attachments) through the ORM, in a few flushes for all."""
        now = utcnow()
        for plan in plans:
            if plan.item is None:
                plan.item = Item(
                    status="draft",
                    source=self.source.name,
                    external_id=plan.row.external_id,
                    latest_version_no=1,
                    created_by=knowledge.user_id(self.actor),
                    **plan.item_fields,
                )
                session.add(plan.item)
            else:
                for k, v in plan.item_fields.items():
                    setattr(plan.item, k, v)
        await session.flush()  # the new items' ids
        for plan in plans:
            item, content = plan.item, plan.content
            assert item is not None
            if self.attachments is not None and "attachments" in plan.row.fields:
                content.attachments = await self.attachments.attach(
                    session, self.actor, item, plan.row.fields["attachments"]
                )
            version = plan.target
            if version is None:
                if isinstance(content, Content):
                    content = content.version()
                content.item_id = item.id
                version = content
                session.add(version)
                item.latest_version_no = version.number
            else:  # overwrite the source's own open version with the new content
                for name in knowledge.CONTENT_FIELDS:
                    setattr(version, name, getattr(content, name))
                version.categories, version.tags = list(content.categories), list(content.tags)
                version.attachments = list(content.attachments)
            version.change_note = f"导入 import #{self.job.id} ({self.source.name})"
            version.updated_at = item.updated_at = now
            plan.version = version
        await session.flush()  # the versions' ids
        pairs = [(p.item, p.version) for p in plans if p.item is not None and p.version is not None]
        if self.source.publish_mode == "publish":
            await workflow.publish_many(session, self.actor, pairs, now)
        else:
            for item, version in pairs:
                version.state, version.submitted_at = "in_review", now
                if item.status == "archived":
                    item.status = "unpublished"  # revived by the source: waits for review
        for plan in plans:
            assert plan.item is not None and plan.version is not None
            plan.item_id = plan.item.id
            await _remember(session, plan.item.id, self.source.name, plan.digest, plan.record, plan.version.number)
            record(
                session,
                self.actor,
                "item.import",
                "item",
                plan.item.id,
                import_id=self.job.id,
                source=self.source.name,
                external_id=plan.row.external_id,
                version=plan.version.number,
                outcome="created" if plan.created else "updated",
                state=plan.version.state,
            )
        await session.flush()


def _row_failure(e: Exception) -> tuple[str, str, str | None]:
    """(code, message, field) of a row's failure."""
    if isinstance(e, RowError):
        return e.code, e.message, e.field
    if isinstance(e, AppError):
        return e.code, e.detail or e.title, None
    first = (str(e).splitlines() or [""])[0][:300]
    return "row_refused", f"the database refused this row: {type(e).__name__}: {first}", None


async def _remember(
    session: AsyncSession, item_id: int, source: str, digest: str, rec: SyncRecord | None, version_no: int
) -> None:
    if rec is None:
        session.add(SyncRecord(item_id=item_id, source=source, content_hash=digest, version_no=version_no))
    else:
        rec.content_hash, rec.version_no = digest, version_no


async def archive_item(session: AsyncSession, actor: Principal, item: Item, job: ImportJob, why: str) -> None:
    """Archive a synced item (gone from a full sync's snapshot, or deleted by the source): the
    published version is archived as by the editors' action; one never published is archived with
    its open version. Audited; readers, feed and index follow in the batch."""
    version = await knowledge.published_version(session, item)
    if version is not None:
        await workflow.archive_now(session, item, version)
    else:
        latest = await knowledge.latest_version(session, item)
        latest.state, latest.publish_at = "archived", None
        item.status = "archived"
    item.updated_at = utcnow()
    record(
        session,
        actor,
        "item.archive",
        "item",
        item.id,
        import_id=job.id,
        source=job.source,
        external_id=item.external_id,
        reason=why,
    )


# ---------------------------------------------------------------- the job


async def batches(rows: Iterator[Row], size: int) -> AsyncIterator[list[Row]]:
    """Rows read in a thread, `size` at a time: parsing a spreadsheet must not stall the event loop."""
    while True:
        chunk = await asyncio.to_thread(lambda: list(islice(rows, size)))
        if not chunk:
            return
        yield chunk


def _remove(job: ImportJob, work_dir: Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
    if job.file_path:
        Path(job.file_path).unlink(missing_ok=True)


def _settings_limits(settings: Settings) -> Limits:
    return Limits(max_unzipped_bytes=settings.import_max_unzipped_bytes)


class ImportRun:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        import_id: int,
        services: dict[str, Any],
        progress: Any = None,
    ) -> None:
        self.sessionmaker, self.settings, self.import_id = sessionmaker, settings, import_id
        self.services = services
        self.progress = progress  # async callable: keeps the worker's lease fresh
        self.tz = ZoneInfo(settings.import_timezone)

    async def _job(self, session: AsyncSession) -> ImportJob:
        job = await session.get(ImportJob, self.import_id)
        if job is None:
            raise JobFailed("import_missing", f"import {self.import_id} does not exist")
        return job

    async def _set(self, **values: Any) -> None:
        async with self.sessionmaker() as s:
            await s.execute(
                update(ImportJob).where(ImportJob.id == self.import_id).values(**values, updated_at=utcnow())
            )
            await s.commit()

    def work_dir(self) -> Path:
        return self.settings.data_dir / "imports" / f"{self.import_id}.d"

    async def run(self) -> dict[str, Any]:
        async with self.sessionmaker() as s:
            job = await self._job(s)
            if job.state in ("done", "failed", "needs_confirmation"):
                return {"state": job.state}
            source = await s.scalar(select(SyncSource).where(SyncSource.name == job.source))
            s.expunge_all()
        if source is None:
            return await self.finish_failed(JobFailed("unknown_source", f"the source {job.source!r} was deleted"))
        try:
            path = Path(job.file_path or "")
            if not await asyncio.to_thread(path.is_file):
                raise JobFailed("file_missing", "the uploaded file is no longer on disk")
            with open_reader(
                path,
                job.format,
                work_dir=self.work_dir(),
                encoding=job.options.get("encoding"),
                sheet=job.options.get("sheet"),
                limits=_settings_limits(self.settings),
            ) as reader:
                if job.rows_total is None:
                    await self._scan(job, source, reader)
                    async with self.sessionmaker() as s:
                        job = await self._job(s)
                        s.expunge_all()
                    if job.state == "needs_confirmation":
                        return await self._cleanup(job)
                files = (
                    zip_attachments.ZipFiles(reader, self.services, self.settings, dry_run=job.dry_run)
                    if job.format == "zip"
                    else None
                )
                await self._apply(job, source, reader, files)
            if job.mode == "full":
                await self._archive(job, source)
        except ImportFileError as e:
            return await self.finish_failed(JobFailed(e.code, e.message, **e.extra))
        except JobFailed as e:
            return await self.finish_failed(e)
        async with self.sessionmaker() as s:
            job = await self._job(s)
            job.state, job.finished_at = "done", utcnow()
            src = await s.scalar(select(SyncSource).where(SyncSource.name == job.source))
            wm = job.options.get("watermark")
            if wm is not None and src is not None and not job.dry_run and not job.counts.get("failed"):
                src.watermark, src.watermark_at = wm, utcnow()
            await s.commit()
            s.expunge_all()
        return await self._cleanup(job)

    async def finish_failed(self, e: JobFailed) -> dict[str, Any]:
        log.info("import failed", extra={"import_id": self.import_id, "code": e.code})
        await self._set(state="failed", finished_at=utcnow(), error={"code": e.code, "message": e.message, **e.extra})
        async with self.sessionmaker() as s:
            job = await self._job(s)
            s.expunge_all()
        return await self._cleanup(job)

    async def _cleanup(self, job: ImportJob) -> dict[str, Any]:
        async with self.sessionmaker() as s:
            await s.execute(delete(ImportKey).where(ImportKey.import_id == job.id))
            await s.commit()
        await asyncio.to_thread(_remove, job, self.work_dir())
        return {"state": job.state, "counts": job.counts}

    # -------------------------------------------------------------- scan

    async def _scan(self, job: ImportJob, source: SyncSource, reader: Any) -> None:
        columns = list(reader.columns)
        missing = missing_columns(columns)
        if missing:
            raise JobFailed(
                "missing_columns",
                f"required columns missing: {', '.join(missing)}; the file has: {', '.join(columns) or 'none'}",
                missing=missing,
                columns=columns,
            )
        warnings = list(reader.warnings)
        unknown = unknown_columns(columns)
        if unknown:
            warnings.append(f"unknown columns ignored: {', '.join(unknown)}")
        async with self.sessionmaker() as s:  # a scan that was cut short starts again
            await s.execute(delete(ImportKey).where(ImportKey.import_id == job.id))
            await s.execute(delete(ImportRowError).where(ImportRowError.import_id == job.id))
            found = {"encoding": getattr(reader, "encoding", None), "sheet": getattr(reader, "sheet", None)}
            options = {**job.options, **{k: v for k, v in found.items() if v}}  # what the reader detected
            await s.execute(
                update(ImportJob)
                .where(ImportJob.id == job.id)
                .values(state="scanning", started_at=utcnow(), columns=columns, warnings=warnings, options=options)
            )
            await s.commit()
        total = 0
        pending: dict[str, tuple[int, bool]] = {}
        errors: list[dict[str, Any]] = []

        async def flush() -> None:
            if not pending and not errors:
                return
            async with self.sessionmaker() as s:
                ids = list(pending)
                seen = (
                    dict(
                        (
                            await s.execute(
                                select(ImportKey.external_id, ImportKey.row).where(
                                    ImportKey.import_id == job.id, ImportKey.external_id.in_(ids)
                                )
                            )
                        ).all()
                    )
                    if ids
                    else {}
                )
                rows = []
                for ext, (row_no, is_delete) in pending.items():
                    if ext in seen:
                        errors.append(_dup_error(row_no, ext, seen[ext]))
                    else:
                        rows.append({"import_id": job.id, "external_id": ext, "row": row_no, "delete": is_delete})
                if rows:
                    await s.execute(insert(ImportKey), rows)
                if errors:
                    await s.execute(insert(ImportRowError), [{"import_id": job.id, **e} for e in errors])
                await s.commit()
            pending.clear()
            errors.clear()
            if self.progress:
                await self.progress(phase="scanning", rows_seen=total)

        async for chunk in batches(reader.rows(), SCAN_BATCH):
            for r in chunk:
                total += 1
                if r.error:
                    continue  # reported when the batch is applied
                raw = r.values.get("external_id")
                ext = (
                    str(int(raw) if isinstance(raw, float) and raw.is_integer() else raw).strip()
                    if raw is not None
                    else ""
                )
                if not ext or len(ext) > 128:
                    continue  # the row's own error, reported when applied
                action = str(r.values.get("action") or "").strip().lower()
                if ext in pending:
                    errors.append(_dup_error(r.number, ext, pending[ext][0]))
                else:
                    pending[ext] = (r.number, action == "delete")
                if len(pending) >= SCAN_BATCH:
                    await flush()
        await flush()
        async with self.sessionmaker() as s:
            dup_failed = (
                await s.scalar(
                    select(func.count()).select_from(ImportRowError).where(ImportRowError.import_id == job.id)
                )
                or 0
            )
            to_archive = None
            active = 0
            if job.mode == "full":
                active = (
                    await s.scalar(
                        select(func.count())
                        .select_from(Item)
                        .where(Item.source == source.name, Item.status != "archived")
                    )
                    or 0
                )
                to_archive = await s.scalar(select(func.count()).select_from(Item).where(*_missing(job)))
            counts = {**dict.fromkeys(COUNTS, 0), "failed": dup_failed}
            values: dict[str, Any] = {
                "rows_total": total,
                "to_archive": to_archive,
                "counts": counts,
                "state": "running",
            }
            if (
                to_archive
                and active
                and to_archive / active > source.max_archive_share
                and not job.confirm_mass_archive
            ):
                values |= {
                    "state": "needs_confirmation",
                    "finished_at": utcnow(),
                    "error": {
                        "code": "mass_archive",
                        "to_archive": to_archive,
                        "active": active,
                        "max_archive_share": source.max_archive_share,
                        "message": f"this full sync would archive {to_archive} of the source's {active} items "
                        f"({to_archive / active:.0%}, more than {source.max_archive_share:.0%}); nothing was "
                        "written: send the file again with confirm_mass_archive=true if that is right",
                    },
                }
            await s.execute(update(ImportJob).where(ImportJob.id == job.id).values(**values, updated_at=utcnow()))
            await s.commit()

    # -------------------------------------------------------------- apply

    async def _apply(
        self, job: ImportJob, source: SyncSource, reader: Any, files: zip_attachments.ZipFiles | None
    ) -> None:
        actor = import_actor(job)
        applier = Applier(job, source, actor, self.tz, files)
        done_before = job.last_row
        async for chunk in batches(reader.rows(), BATCH):
            batch = [r for r in chunk if r.number > done_before]  # committed before the worker stopped
            if batch:
                await self._commit_batch(job, applier, batch)

    async def _commit_batch(self, job: ImportJob, applier: Applier, rows: list[Row]) -> None:
        result = BatchResult()
        async with self.sessionmaker() as s:
            try:
                await applier.batch(s, rows, result)
            except ROW_DB_ERRORS:
                await s.rollback()  # one row the database refused: find it, one savepoint per row
                assert applier.lookups is not None
                applier.lookups.forget_created()
                result = BatchResult()
                await applier.batch(s, rows, result, isolate=True)
            except Exception:
                await s.rollback()
                applier.lookups = None
                raise
            if job.dry_run:
                await s.rollback()
                assert applier.lookups is not None
                applier.lookups.forget_created()
            await self._progress(s, job, rows, result)
            await s.commit()
        if self.progress:
            await self.progress(phase="running", rows_done=job.rows_done, rows_total=job.rows_total)

    async def _progress(self, s: AsyncSession, job: ImportJob, rows: list[Row], result: BatchResult) -> None:
        """The job's own state, in the batch's transaction (after a dry run's rollback, alone)."""
        fresh = await self._job(s)
        fresh.last_row = rows[-1].number
        fresh.rows_done = fresh.rows_done + len(rows)
        fresh.counts = {k: fresh.counts.get(k, 0) + result.counts.get(k, 0) for k in COUNTS}
        fresh.updated_at = utcnow()
        stored = (
            await s.scalar(select(func.count()).select_from(ImportRowError).where(ImportRowError.import_id == job.id))
            or 0
        )
        room = max(MAX_ERRORS - stored, 0)
        if result.errors[:room]:
            await s.execute(insert(ImportRowError), [{"import_id": job.id, **e} for e in result.errors[:room]])
        if result.outcomes:
            await s.execute(insert(ImportOutcome), [{"import_id": job.id, **o} for o in result.outcomes])
        job.last_row, job.rows_done, job.counts = fresh.last_row, fresh.rows_done, dict(fresh.counts)

    # -------------------------------------------------------------- archive

    async def _archive(self, job: ImportJob, source: SyncSource) -> None:
        await self._set(state="archiving")
        actor = import_actor(job)
        done: set[int] = set()
        while True:
            result = BatchResult()
            async with self.sessionmaker() as s:
                stmt = select(Item).where(*_missing(job)).order_by(Item.id).limit(ARCHIVE_BATCH)
                if done:
                    stmt = stmt.where(Item.id.not_in(done))
                items = list((await s.scalars(stmt)).all())
                if not items:
                    break
                for item in items:
                    await archive_item(s, actor, item, job, "missing from a full sync")
                    result.counts["archived"] += 1
                    result.outcomes.append({"action": "archived", "item_id": item.id, "external_id": item.external_id})
                    done.add(item.id)
                ids = [i.id for i in items]
                await acl.refresh_readers(s, ids)
                await reconcile(s, ids)
                for item_id in ids:
                    enqueue(s, INDEX_JOB, {"item_id": item_id}, created_by=actor.actor)
                if job.dry_run:
                    await s.rollback()
                fresh = await self._job(s)
                fresh.counts = {k: fresh.counts.get(k, 0) + result.counts.get(k, 0) for k in COUNTS}
                await s.execute(insert(ImportOutcome), [{"import_id": job.id, **o} for o in result.outcomes])
                await s.commit()


def _missing(job: ImportJob) -> list[Any]:
    """Conditions on Item: of the job's source, not archived, not named (to keep) by the job's file."""
    named = exists().where(
        and_(ImportKey.import_id == job.id, ImportKey.external_id == Item.external_id, ImportKey.delete.is_(False))
    )
    return [Item.source == job.source, Item.status != "archived", ~named]


def _dup_error(row: int, external_id: str, first: int) -> dict[str, Any]:
    return {
        "row": row,
        "external_id": external_id,
        "field": "external_id",
        "code": "duplicate_external_id",
        "message": f"external_id {external_id!r} appears again: row {first} has it first and wins",
    }
