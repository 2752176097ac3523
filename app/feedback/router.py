"""Error reports (纠错) and owner tasks.

An agent reports what is wrong with an item it can read; the report becomes a task for the item's
owner (unassigned when the item has none), who accepts it, fixes it by naming the newly published
version, or dismisses it with a reason. The reporter follows the outcome in GET /me/error-reports.
The reminder job adds `review_due` and `expiring` tasks (app/feedback/reminders.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.core.deps import AppSettings, DbSession
from app.core.errors import PROBLEMS, InvalidInput
from app.core.etag import IfMatch, check_if_match, not_modified
from app.core.pagination import Page, Paging
from app.core.schemas import MAX_ID, Id
from app.feedback import service
from app.feedback.schemas import (
    AcceptIn,
    DismissIn,
    ErrorReportIn,
    FixIn,
    OwnerTransferIn,
    OwnerTransferOut,
    TaskKind,
    TaskOut,
    TaskState,
)
from app.identity.deps import Require
from app.identity.principal import Principal
from app.knowledge.deps import accessible_item

router = APIRouter(tags=["feedback"], responses=PROBLEMS)

Reporter = Require("feedback:report")
Staff = Require("module:knowledge")  # tasks: the caller's own; feedback:manage holders see every one
CACHE = "private, no-cache"


@router.post(
    "/items/{item_id}/error-reports",
    response_model=TaskOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "model": TaskOut,
            "description": "The reporter's unresolved report of this item and category, unchanged (a repeat)",
        }
    },
)
async def report_error(
    request: Request,
    response: Response,
    session: DbSession,
    settings: AppSettings,
    actor: Reporter,
    item_id: Id,
    body: ErrorReportIn,
) -> TaskOut:
    """Report an error in an item the caller can read (纠错): 201 with the new task for the item's
    owner. One unresolved report per reporter, item and category: a repeat answers 200 with the
    existing one. At most `KB_ERROR_REPORT_MAX_PER_HOUR` reports per reporter an hour (429
    `too_many_reports` with Retry-After). An item the caller cannot read: 404."""
    item = await accessible_item(request, session, actor, item_id)
    task, created = await service.file_report(session, actor, item, body, settings.error_report_max_per_hour)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["ETag"] = service.etag_of(task)
    return (await service.outs(session, [task]))[0]


@router.get("/me/error-reports", response_model=Page[TaskOut])
async def my_error_reports(
    session: DbSession, actor: Reporter, page: Paging, state: TaskState | None = None
) -> Page[TaskOut]:
    """The caller's error reports, newest first, with their outcome: `fixed_version` (and its
    `fixed_version_url`) or the dismissal's `resolution_note`."""
    rows, nxt = await service.my_reports(session, actor, page, state)
    return Page(items=await service.outs(session, rows), next_cursor=nxt)


@router.get("/tasks", response_model=Page[TaskOut])
async def list_tasks(
    session: DbSession,
    principal: Staff,
    page: Paging,
    state: TaskState | None = None,
    kind: TaskKind | None = None,
    item_id: Id | None = None,
    assignee: Annotated[
        str | None, Query(pattern=r"^(me|unassigned|[1-9][0-9]{0,18})$", description="me, unassigned, or a user id")
    ] = None,
) -> Page[TaskOut]:
    """Tasks on items the caller may read, newest first: the caller's own, or every one (unassigned
    ones included) with feedback:manage."""
    if assignee is not None and assignee.isdigit() and int(assignee) > MAX_ID:
        raise InvalidInput("assignee: not a valid user id", code="validation_error", field="assignee")
    rows, nxt = await service.list_tasks(
        session, principal, page, state=state, kind=kind, item_id=item_id, assignee=assignee
    )
    return Page(items=await service.outs(session, rows), next_cursor=nxt)


@router.get("/tasks/{task_id}", response_model=TaskOut, responses={304: {"description": "Not modified"}})
async def get_task(
    request: Request, response: Response, session: DbSession, principal: Staff, task_id: Id
) -> TaskOut | Response:
    """One task with its `ETag` (answers 304 to a current If-None-Match)."""
    task = await service.load_task(session, principal, task_id)
    etag = service.etag_of(task)
    if not_modified(request, response, etag, CACHE):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE})
    return (await service.outs(session, [task]))[0]


async def _act(
    response: Response,
    session: DbSession,
    actor: Principal,
    task_id: int,
    action: str,
    body: AcceptIn | FixIn | DismissIn,
    if_match: str | None,
) -> TaskOut:
    service.user_of(actor)
    task = await service.load_task(session, actor, task_id, for_update=True)
    if if_match is not None:
        check_if_match(if_match, service.etag_of(task), task.row_version)
    await service.transition(session, actor, task, action, body)
    response.headers["ETag"] = service.etag_of(task)
    return (await service.outs(session, [task]))[0]


_TRANSITION_DOC = (
    " The assignee or a holder of feedback:manage; a task not in a state this action leaves from "
    "answers 409 `invalid_transition` with the `allowed` actions. `If-Match` (the task's ETag) "
    "is checked when sent: 412 when someone changed the task since."
)


@router.post("/tasks/{task_id}/accept", response_model=TaskOut, description="Take an open task on." + _TRANSITION_DOC)
async def accept_task(
    response: Response,
    session: DbSession,
    actor: Staff,
    task_id: Id,
    body: AcceptIn | None = None,
    if_match: IfMatch = None,
) -> TaskOut:
    return await _act(response, session, actor, task_id, "accept", body or AcceptIn(), if_match)


@router.post(
    "/tasks/{task_id}/fix",
    response_model=TaskOut,
    description=(
        "Resolve a task by naming the published version that corrects it: `version` must be a published (or since "
        "superseded) version of the item newer than the reported one, else 422 `version_not_found`, "
        "`version_not_published` or `version_not_newer`." + _TRANSITION_DOC
    ),
)
async def fix_task(
    response: Response, session: DbSession, actor: Staff, task_id: Id, body: FixIn, if_match: IfMatch = None
) -> TaskOut:
    return await _act(response, session, actor, task_id, "fix", body, if_match)


@router.post(
    "/tasks/{task_id}/dismiss",
    response_model=TaskOut,
    description="Close a task without a change; the `reason` is shown to the reporter." + _TRANSITION_DOC,
)
async def dismiss_task(
    response: Response, session: DbSession, actor: Staff, task_id: Id, body: DismissIn, if_match: IfMatch = None
) -> TaskOut:
    return await _act(response, session, actor, task_id, "dismiss", body, if_match)


@router.post("/items/owner-transfer", response_model=OwnerTransferOut)
async def transfer_owner(
    session: DbSession, actor: Require("knowledge:owners"), body: OwnerTransferIn
) -> OwnerTransferOut:
    """Someone leaves: every item owned by `from_user_id` and their open or accepted tasks go to
    `to_user_id`, in one transaction (every item, whatever its ACL; each item's ETag changes).
    `dry_run` only counts. An unknown or inactive target: 422 (`unknown_user`, `inactive_user`)."""
    return await service.transfer_owner(session, actor, body)
