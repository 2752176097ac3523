"""学习路径 (learning paths): managers (`study:manage`) write them and follow each agent's progress;
agents (`study:read`) see theirs, what they still have to read and what changed since they read it.
Reading is counted from the agent channel's views (GET /channels/agent/items/{id}); see
app/study/service.py for the rules."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from app.channels.events import events_of
from app.core.deps import DbSession
from app.core.errors import PROBLEMS
from app.core.etag import IfMatch, check_if_match
from app.core.pagination import Page, Paging
from app.core.schemas import Id
from app.identity.deps import Require
from app.knowledge.schemas import DiffOut
from app.study import service
from app.study.models import StudyPath
from app.study.schemas import ChangedItem, MyPath, PathCreate, PathOut, PathUpdate, ProgressPage

router = APIRouter(tags=["study"], responses=PROBLEMS)

Manager = Require(service.MANAGE)
Reader = Require(service.READ)


async def _out(session: DbSession, p: StudyPath, response: Response) -> PathOut:
    response.headers["ETag"] = service.etag_of(p)
    return (await service.out_many(session, [p]))[0]


@router.post("/study/paths", response_model=PathOut, status_code=status.HTTP_201_CREATED)
async def create_path(session: DbSession, actor: Manager, body: PathCreate, response: Response) -> PathOut:
    """A learning path for roles (and departments). 422 naming the field: `unknown_role`,
    `unknown_department`, `unknown_items`, `duplicate_items`, and `items_not_readable` when some
    of the audience may not read an item (its ACL)."""
    return await _out(session, await service.create(session, actor, body), response)


@router.get("/study/paths", response_model=Page[PathOut])
async def list_paths(session: DbSession, actor: Manager, page: Paging, active: bool | None = None) -> Page[PathOut]:
    """Every learning path, newest first."""
    rows, nxt = await service.list_paths(session, page, active)
    return Page(items=await service.out_many(session, rows), next_cursor=nxt)


@router.get("/study/paths/{path_id}", response_model=PathOut)
async def get_path(session: DbSession, actor: Manager, path_id: Id, response: Response) -> PathOut:
    return await _out(session, await service.get(session, path_id), response)


@router.patch("/study/paths/{path_id}", response_model=PathOut)
async def update_path(
    session: DbSession, actor: Manager, path_id: Id, body: PathUpdate, response: Response, if_match: IfMatch = None
) -> PathOut:
    """Change what was sent (`If-Match` required: 428 without, 412 when stale)."""
    p = await service.get(session, path_id)
    check_if_match(if_match, service.etag_of(p), p.row_version)
    return await _out(session, await service.update(session, actor, p, body), response)


@router.delete("/study/paths/{path_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_path(session: DbSession, actor: Manager, path_id: Id, if_match: IfMatch = None) -> None:
    """Delete the path (the audit log keeps it); `active: false` withdraws it instead."""
    p = await service.get(session, path_id)
    check_if_match(if_match, service.etag_of(p), p.row_version)
    await service.delete_path(session, actor, p)


@router.get("/study/paths/{path_id}/progress", response_model=ProgressPage)
async def path_progress(
    request: Request, session: DbSession, actor: Manager, path_id: Id, page: Paging
) -> ProgressPage:
    """Each active user of the audience, by user id: items they can read, how many they read (the
    current published version), completed, overdue."""
    p = await service.get(session, path_id)
    await events_of(request).flush()  # this process's latest views
    return await service.progress(session, p, page)


@router.get("/me/study", response_model=list[MyPath])
async def my_study(request: Request, session: DbSession, reader: Reader) -> list[MyPath]:
    """My learning paths (due first): progress, the next item to read, and each item's state."""
    await events_of(request).flush()
    return await service.my_paths(session, reader)


@router.get("/me/study/paths/{path_id}", response_model=MyPath)
async def my_study_path(request: Request, session: DbSession, reader: Reader, path_id: Id) -> MyPath:
    """One of my paths; 404 when it is not assigned to me."""
    await events_of(request).flush()
    return await service.my_path(session, reader, path_id)


@router.get("/me/study/changes", response_model=Page[ChangedItem])
async def my_changes(request: Request, session: DbSession, reader: Reader, page: Paging) -> Page[ChangedItem]:
    """What changed since I last read it: items I viewed on the agent channel whose published version
    is now newer, each with the link to the diff."""
    await events_of(request).flush()
    rows, nxt = await service.my_changes(session, reader, page)
    return Page(items=rows, next_cursor=nxt)


@router.get("/me/study/changes/{item_id}", response_model=DiffOut)
async def my_change(request: Request, session: DbSession, reader: Reader, item_id: Id) -> DiffOut:
    """The diff from the version I last read to the current published one (404 `no_change` when I
    read the current one, never read it, or may not read it now)."""
    await events_of(request).flush()
    return await service.my_change(session, reader, item_id)
