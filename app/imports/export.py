"""Export a source's items with exactly the import's columns (columns.py), so that export -> import
into another instance gives the same content.

- The version written: the published one, else (never published, or only in review) the latest.
- Categories: the path of node names from the root (`宽带业务/宽带故障`) for nodes of the source's
  taxonomy (ids differ between instances); a one-level path made of digits as `/2024` (a digits-only
  token is a node id to the import); nodes of other taxonomies as their id, which only the same
  instance resolves. Tags by name, the owner by user name, `answer.<channel>` only the channel's
  own answer, dates of validity ISO 8601 with the offset of `KB_IMPORT_TIMEZONE`.
- Lists: JSON arrays in NDJSON; one value per line in CSV and XLSX cells, or a JSON array in the
  cell when a value itself holds a line break or `|`. Lists in every column
  and categories, tags, similar questions are sorted where the order carries no meaning, so
  two exports of the same content are the same bytes.
- Who sees what: a sync client that may write the source (its scope) exports all of it, being the
  system that sent it, as does a superuser; a user exports only the items their ACL lets them read
  (`app/knowledge/acl.py`), so an export never shows an item the same user could not open. A job
  keeps the ACL subjects of the user who started it.
- Items are read in batches (keyset by id; versions, categories, tags and owners of a batch in a
  few queries), so memory stays flat. Up to `KB_EXPORT_INLINE_MAX_ITEMS` items stream in the
  response; more become a job (`imports.export`) writing a file under data_dir/exports.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import raiseload, selectinload

from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import Conflict, NotFound
from app.identity.models import User
from app.identity.principal import Principal
from app.imports.columns import ANSWER_PREFIX, ATTR_PREFIX, export_columns, join_cell
from app.imports.engine import default_taxonomy
from app.imports.models import ExportJob, SyncSource
from app.imports.schemas import ExportOut
from app.imports.service import may_write
from app.knowledge.acl import subjects_of
from app.knowledge.models import Item, ItemReader, ItemVersion
from app.taxonomy import service as taxonomy
from app.taxonomy.models import TaxonomyNode
from app.workers.outbox import enqueue

log = logging.getLogger("app.imports")

EXPORT_FORMATS = ("ndjson", "csv", "xlsx")
MEDIA_TYPES = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
EXPORT_JOB = "imports.export"
EXPIRE_JOB = "imports.expire_exports"
# A streamed XLSX is written whole first; one left behind by a crashed request goes after this long.
INLINE_LEFTOVER_HOURS = 1.0
EXPORT_ATTEMPTS = 3
BATCH = 500
BOM = "\ufeff"


@dataclass
class Plan:
    """What an export writes: checked and counted before the first byte goes out."""

    source: str
    include_archived: bool
    taxonomy_id: int | None
    columns: list[str]
    total: int
    tz: ZoneInfo
    readers: list[str] | None = None  # ACL subjects the exporter stands for; None: every item

    def conditions(self) -> list[Any]:
        out = [Item.source == self.source]
        if not self.include_archived:
            out.append(Item.status != "archived")
        if self.readers is not None:
            out.append(exists().where(ItemReader.item_id == Item.id, ItemReader.subject.in_(self.readers)))
        return out


def readers_for(principal: Principal) -> list[str] | None:
    """The ACL subjects an export is filtered by (module docstring): None for the source's sync
    client and superusers."""
    if principal.is_superuser or principal.kind == "client":
        return None  # a client reaches here only with the source's scope (may_write)
    return subjects_of(principal)


async def plan(
    session: AsyncSession, source: SyncSource, include_archived: bool, tz: ZoneInfo, readers: list[str] | None = None
) -> Plan:
    """The columns (the attributes of the templates of the item types the source's items have) and
    the number of items."""
    base = Plan(source.name, include_archived, await default_taxonomy(session, source), [], 0, tz, readers)
    types = (await session.scalars(select(Item.item_type).where(*base.conditions()).distinct())).all()
    codes: set[str] = set()
    for item_type in types:
        codes.update(d.code for d in await taxonomy.template_for_type(session, item_type))
    base.columns = export_columns(sorted(codes))
    base.total = await session.scalar(select(func.count()).select_from(Item).where(*base.conditions())) or 0
    return base


# ---------------------------------------------------------------- reading rows


@dataclass
class RowReader:
    sessionmaker: async_sessionmaker[AsyncSession]
    plan: Plan
    batch_size: int = BATCH
    # node id -> (taxonomy id, name, path of ids); nodes are few, kept for the whole export
    nodes: dict[int, tuple[int, str, str]] = field(default_factory=dict)

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Rows (column -> value, in the plan's column order), `batch_size` items at a time."""
        after = 0
        while True:
            async with self.sessionmaker() as s:
                items = list(
                    (
                        await s.scalars(
                            select(Item)
                            .where(*self.plan.conditions(), Item.id > after)
                            .order_by(Item.id)
                            .limit(self.batch_size)
                        )
                    ).all()
                )
                if not items:
                    return
                ids = [i.id for i in items]
                exported = or_(
                    ItemVersion.id == Item.published_version_id,
                    and_(Item.published_version_id.is_(None), ItemVersion.number == Item.latest_version_no),
                )
                versions = {
                    v.item_id: v
                    for v in (
                        await s.scalars(
                            select(ItemVersion)
                            .join(Item, and_(Item.id == ItemVersion.item_id, exported))
                            .where(Item.id.in_(ids))
                            .options(
                                selectinload(ItemVersion.categories),
                                selectinload(ItemVersion.tags),
                                raiseload(ItemVersion.attachments),
                            )
                        )
                    ).all()
                }  # type: ignore[attr-defined]
                owner_ids = {i.owner_id for i in items if i.owner_id is not None}
                owners: dict[int, str] = (
                    dict(
                        (
                            await s.execute(
                                select(User.id, User.username).where(  # type: ignore[arg-type]
                                    User.id.in_(owner_ids)
                                )
                            )
                        ).all()
                    )
                    if owner_ids
                    else {}
                )
                await self._load_nodes(s, [n for v in versions.values() for n in v.categories])
                rows = [self.row(i, versions[i.id], owners) for i in items if i.id in versions]
            after = ids[-1]
            yield rows

    async def _load_nodes(self, s: AsyncSession, nodes: list[TaxonomyNode]) -> None:
        wanted: set[int] = set()
        for n in nodes:
            self.nodes.setdefault(n.id, (n.taxonomy_id, n.name, n.path))
            wanted.update(int(p) for p in n.path.strip("/").split("/") if p.isdigit())
        missing = wanted - self.nodes.keys()
        if missing:
            for n in (await s.scalars(select(TaxonomyNode).where(TaxonomyNode.id.in_(missing)))).all():
                self.nodes[n.id] = (n.taxonomy_id, n.name, n.path)

    def category(self, node: TaxonomyNode) -> str:
        if node.taxonomy_id != self.plan.taxonomy_id:
            return str(node.id)
        names = [self.nodes[int(p)][1] for p in node.path.strip("/").split("/") if p.isdigit() and int(p) in self.nodes]
        path = "/".join(names) or node.name
        return f"/{path}" if path.isdigit() else path

    def row(self, item: Item, v: ItemVersion, owners: dict[int, str]) -> dict[str, Any]:
        tz = self.plan.tz
        answers, attrs = v.channel_answers or {}, v.attributes or {}
        known: dict[str, Any] = {
            "external_id": item.external_id,
            "title": v.title,
            "question": v.question,
            "similar_questions": list(v.similar_questions),
            "body": v.body,
            "body_format": v.body_format,
            "channels": list(v.channels),
            "categories": sorted(self.category(n) for n in v.categories),
            "tags": sorted(t.name for t in v.tags),
            "item_type": item.item_type,
            "visibility": item.visibility,
            "valid_from": item.valid_from.astimezone(tz).isoformat() if item.valid_from else None,
            "valid_to": item.valid_to.astimezone(tz).isoformat() if item.valid_to else None,
            "review_due": item.review_due.isoformat() if item.review_due else None,
            "owner": owners.get(item.owner_id) if item.owner_id is not None else None,
        }
        out: dict[str, Any] = {}
        for c in self.plan.columns:
            if c.startswith(ANSWER_PREFIX):
                out[c] = answers.get(c[len(ANSWER_PREFIX) :]) or None
            elif c.startswith(ATTR_PREFIX):
                out[c] = attrs.get(c[len(ATTR_PREFIX) :])
            else:
                out[c] = known[c]
        return out


# ---------------------------------------------------------------- formats


def ndjson_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


def text_cell(value: Any) -> str:
    """A CSV or XLSX cell: lists one value per line, or a JSON array when a value holds a line break
    or `|` (columns.join_cell; the import reads both)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return join_cell(value)
    return str(value)


def csv_lines(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


async def stream(reader: RowReader, fmt: str) -> AsyncIterator[bytes]:
    """NDJSON or CSV (with the BOM Excel needs to read UTF-8), a batch of rows per chunk."""
    columns = reader.plan.columns
    if fmt == "csv":
        yield (BOM + csv_lines([columns])).encode()
    async for rows in reader.batches():
        if fmt == "csv":
            yield csv_lines([[text_cell(r[c]) for c in columns] for r in rows]).encode()
        else:
            yield "".join(ndjson_line(r) for r in rows).encode()


def _xlsx_cells(sheet: Any, columns: list[str], row: dict[str, Any]) -> list[Any]:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    out: list[Any] = []
    for c in columns:
        value = row[c]
        if isinstance(value, bool) or not isinstance(value, int | float):
            value = text_cell(value)
            if not value:
                out.append(None)
                continue
            cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
            cell.data_type = "s"  # text, never a formula (an answer may start with "=")
            out.append(cell)
        else:
            out.append(value)  # numbers (attr.<number>) stay numbers for Excel
    return out


def _append_all(sheet: Any, rows: list[list[Any]]) -> None:
    for row in rows:
        sheet.append(row)


async def write_file(
    reader: RowReader, fmt: str, path: Path, on_batch: Callable[[int], Awaitable[None]] | None = None
) -> int:
    """The whole export into `path`; returns the number of rows. XLSX in openpyxl's write-only mode
    (rows go to a temporary file as they come, not kept in memory)."""
    written = 0
    if fmt == "xlsx":
        from openpyxl import Workbook

        book = Workbook(write_only=True)
        sheet = book.create_sheet("items")
        sheet.append(reader.plan.columns)
        async for rows in reader.batches():
            cells = [_xlsx_cells(sheet, reader.plan.columns, r) for r in rows]
            await asyncio.to_thread(_append_all, sheet, cells)
            written += len(rows)
            if on_batch:
                await on_batch(written)
        await asyncio.to_thread(book.save, path)
        return written
    with path.open("wb") as f:
        if fmt == "csv":
            f.write((BOM + csv_lines([reader.plan.columns])).encode())
        async for rows in reader.batches():
            if fmt == "csv":
                chunk = csv_lines([[text_cell(r[c]) for c in reader.plan.columns] for r in rows])
            else:
                chunk = "".join(ndjson_line(r) for r in rows)
            await asyncio.to_thread(f.write, chunk.encode())
            written += len(rows)
            if on_batch:
                await on_batch(written)
    return written


def file_name(source: str, fmt: str) -> str:
    return f"{source}-{utcnow().strftime('%Y%m%d-%H%M%S')}.{fmt}"


def exports_dir(settings: Settings) -> Path:
    return settings.data_dir / "exports"


# ---------------------------------------------------------------- export jobs


async def start_job(
    session: AsyncSession, actor: Principal, *, source: str, fmt: str, include_archived: bool
) -> ExportJob:
    from app.audit.service import record

    job = ExportJob(
        source=source, format=fmt, include_archived=include_archived, state="queued", created_by=actor.actor
    )
    session.add(job)
    await session.flush()
    work = enqueue(
        session,
        EXPORT_JOB,
        {"export_id": job.id, "readers": readers_for(actor)},
        created_by=actor.actor,
        max_attempts=EXPORT_ATTEMPTS,
    )
    await session.flush()
    job.job_id = work.id
    record(
        session, actor, "export.create", "export", job.id, source=source, format=fmt, include_archived=include_archived
    )
    await session.commit()
    return job


async def get_job(session: AsyncSession, principal: Principal, export_id: int) -> ExportJob:
    job = await session.get(ExportJob, export_id)
    # Its file was filtered by its starter's ACL: it is theirs (and a superuser's) alone.
    mine = job is not None and (job.created_by == principal.actor or principal.is_superuser)
    if job is None or not mine or not may_write(principal, job.source):
        raise NotFound(f"No export with id {export_id}", code="export_not_found")
    return job


def job_file(job: ExportJob) -> Path:
    if job.state == "expired":
        raise Conflict(
            f"Export {job.id} was deleted after KB_EXPORT_RETENTION_HOURS; start a new one",
            code="export_expired",
            status=410,
            state=job.state,
        )
    if job.state != "done" or not job.file_path or not Path(job.file_path).is_file():
        raise Conflict(
            f"Export {job.id} is {job.state}: its file is not there"
            + (f" ({job.error.get('message')})" if job.error else ""),
            code="export_not_ready",
            state=job.state,
        )
    return Path(job.file_path)


def job_out(job: ExportJob) -> ExportOut:
    return ExportOut(
        id=job.id,
        source=job.source,
        format=job.format,
        include_archived=job.include_archived,
        state=job.state,  # type: ignore[arg-type]
        rows=job.rows,
        rows_total=job.rows_total,
        file_bytes=job.file_bytes,
        file=f"/api/v1/exports/{job.id}/file" if job.state == "done" else None,
        error=job.error,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


async def run_job(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    export_id: int,
    *,
    readers: list[str] | None = None,
    progress: Callable[..., Awaitable[None]] | None = None,
    last_attempt: bool = True,
) -> dict[str, Any]:
    """The worker's side: write the file, then mark the export done. A retried attempt starts over."""

    async def set_(**values: Any) -> None:
        async with sessionmaker() as s:
            await s.execute(update(ExportJob).where(ExportJob.id == export_id).values(**values, updated_at=utcnow()))
            await s.commit()

    async with sessionmaker() as s:
        job = await s.get(ExportJob, export_id)
        if job is None:
            return {"state": "missing"}
        if job.state in ("done", "failed"):
            return {"state": job.state}
        source = await s.scalar(select(SyncSource).where(SyncSource.name == job.source))
        if source is None:
            await set_(
                state="failed",
                finished_at=utcnow(),
                error={"code": "unknown_source", "message": f"the source {job.source!r} was deleted"},
            )
            return {"state": "failed"}
        p = await plan(s, source, job.include_archived, ZoneInfo(settings.import_timezone), readers)
        fmt = job.format
    folder = exports_dir(settings)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    final, part = folder / f"{export_id}.{fmt}", folder / f"{export_id}.{fmt}.part"
    await set_(state="running", started_at=utcnow(), rows=0, rows_total=p.total, error=None)

    async def on_batch(rows: int) -> None:
        await set_(rows=rows)
        if progress:
            await progress(rows=rows, rows_total=p.total)

    try:
        rows = await write_file(RowReader(sessionmaker, p), fmt, part, on_batch)
        await asyncio.to_thread(part.replace, final)
    except Exception as e:
        await asyncio.to_thread(part.unlink, missing_ok=True)
        log.warning("export failed", extra={"export_id": export_id, "error": repr(e)})
        await set_(
            state="failed" if last_attempt else "queued",
            finished_at=utcnow() if last_attempt else None,
            error={"code": "export_failed", "message": f"{type(e).__name__}: {str(e)[:500]}"},
        )
        raise
    size = (await asyncio.to_thread(final.stat)).st_size
    await set_(state="done", rows=rows, file_path=str(final), file_bytes=size, finished_at=utcnow())
    return {"state": "done", "rows": rows, "bytes": size}


async def expire(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """Delete the files of export jobs older than `KB_EXPORT_RETENTION_HOURS` (their state becomes
    `expired`) and inline XLSX files a crashed request left behind."""
    from datetime import timedelta

    now = utcnow()
    expired = 0
    if settings.export_retention_hours > 0:
        cutoff = now - timedelta(hours=settings.export_retention_hours)
        jobs = (
            await session.scalars(
                select(ExportJob).where(ExportJob.state == "done", ExportJob.finished_at < cutoff).limit(1000)
            )
        ).all()
        for job in jobs:
            if job.file_path:
                await asyncio.to_thread(Path(job.file_path).unlink, missing_ok=True)
            job.state, job.file_path = "expired", None
            expired += 1
        await session.commit()
    leftovers = 0
    folder = exports_dir(settings)
    limit = now.timestamp() - INLINE_LEFTOVER_HOURS * 3600

    def sweep_inline() -> int:
        n = 0
        for path in folder.glob("inline-*.xlsx") if folder.is_dir() else ():
            try:
                if path.stat().st_mtime < limit:
                    path.unlink(missing_ok=True)
                    n += 1
            except FileNotFoundError:
                pass
        return n

    leftovers = await asyncio.to_thread(sweep_inline)
    return {"expired": expired, "inline_leftovers": leftovers}
