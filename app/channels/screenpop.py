"""CTI screen pop: what the agent's softphone shows when a call arrives.

`GET /channels/agent/screen-pop?called=&ivr_path=&business_code=&caller_tags=&q=` matches the call
against the enabled rules (`/screen-pop/rules`, permission `channels:manage`) and recommends, in
this order, de-duplicated (an item keeps its first reason):

1. the rules' pinned items, in each rule's order, highest-priority rule first;
2. the newest items of the rules' categories (each a subtree), then of their tags, browsed in the
   search engine under the caller's ACL and the agent channel;
3. the search hits for `q`, same engine and ranking as `/search` (logged like a search).

Every item is checked against the database with `shown_select` (published, valid now, readable,
shown on the agent channel), so an item the agent may not read is silently left out, whichever
rule pinned it. A rule matches when every condition it states holds; rules are cached per process
for `RULE_CACHE_SECONDS` (a write in this process drops the cache at once).
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from app.audit.service import changes, record
from app.channels.access import AGENT, channel_caller
from app.channels.models import ScreenPopRule
from app.channels.ratelimit import check_rate
from app.channels.schemas import (
    MatchedRuleOut,
    ScreenPopItemOut,
    ScreenPopOut,
    ScreenPopRuleIn,
    ScreenPopRuleOut,
    ScreenPopRulePatch,
)
from app.channels.service import shown_select
from app.core.db import get_or_404, utcnow
from app.core.deps import DbSession
from app.core.errors import PROBLEMS, AppError, InvalidInput
from app.core.etag import IfMatch, check_if_match, make_etag
from app.core.pagination import Page, Paging, paginate_by_id
from app.core.schemas import Id
from app.identity.deps import MaybePrincipal, Require
from app.knowledge.models import Item, ItemVersion
from app.knowledge.service import answer_for
from app.search import service as search_service
from app.search.backends.base import SearchBackend, SearchUnavailable
from app.search.documents import SearchFilters, SearchQuery
from app.search.indexing import plain_text, principals_for_search
from app.taxonomy.models import TaxonomyNode
from app.taxonomy.service import resolve_tags

router = APIRouter(tags=["channels"], responses=PROBLEMS)
Manager = Require("channels:manage")

RULE_CACHE_SECONDS = 2.0
DEFAULT_LIMIT, MAX_LIMIT = 10, 50
MAX_BROWSES = 8  # engine browses (one per category or tag) per screen pop
CONDITIONS = ("called", "ivr_path", "business_code", "caller_tags")
TARGETS = ("category_ids", "tags", "pinned_item_ids")

# ---------------------------------------------------------------- normalizing call data

_CALLED_SEPARATORS = re.compile(r"[\s\-().]")
_CALLED = re.compile(r"\d{3,20}")
_IVR = re.compile(r"[0-9*#]{1,10}(?:/[0-9*#]{1,10}){0,29}")
_BUSINESS = re.compile(r"[\w.:\-]{1,64}")


def normalize_called(raw: str) -> str:
    """Digits only: spaces, hyphens, dots and brackets dropped (955 88 = 95588, 4008-123-456 =
    4008123456), full-width digits folded, the China prefix +86 / 0086 dropped."""
    number = _CALLED_SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    if number.startswith("+86"):
        number = number[3:]
    elif number.startswith("0086"):
        number = number[4:]
    number = number.removeprefix("+")
    if not _CALLED.fullmatch(number):
        raise InvalidInput(
            f"called must be a phone number of 3 to 20 digits, got {raw[:40]!r}",
            code="invalid_called",
            errors=[{"field": "called", "message": "not a phone number"}],
        )
    return number


def normalize_ivr_path(raw: str) -> str:
    """IVR keys per node (digits, * and #), nodes separated by '/': 1/3/2. Surrounding blanks and
    slashes are dropped; an empty node (1//3) or any other character is refused."""
    path = unicodedata.normalize("NFKC", raw).strip().strip("/")
    if not _IVR.fullmatch(path):
        raise InvalidInput(
            f"ivr_path must look like 1/3/2 (keys 0-9 * #, at most 30 nodes), got {raw[:40]!r}",
            code="invalid_ivr_path",
            errors=[{"field": "ivr_path", "message": "not an IVR path"}],
        )
    return path


def ivr_prefixes(path: str) -> frozenset[str]:
    """Every node-wise prefix of a path: 1/3/2 -> {1, 1/3, 1/3/2} (so 1/3/20 never matches 1/3/2)."""
    nodes = path.split("/")
    return frozenset("/".join(nodes[: i + 1]) for i in range(len(nodes)))


def normalize_business_code(raw: str) -> str:
    code = unicodedata.normalize("NFKC", raw).strip().upper()
    if not _BUSINESS.fullmatch(code):
        raise InvalidInput(
            f"business_code is 1 to 64 letters, digits, _ . : -, got {raw[:40]!r}",
            code="invalid_business_code",
            errors=[{"field": "business_code", "message": "not a business code"}],
        )
    return code


def normalize_caller_tag(raw: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", raw).split())


# ---------------------------------------------------------------- rules in memory


@dataclass(frozen=True, slots=True)
class RuleView:
    id: int
    name: str
    priority: int
    called: str | None
    ivr_path: str | None
    business_code: str | None
    caller_tags: frozenset[str]  # casefolded
    category_ids: tuple[int, ...]
    tags: tuple[str, ...]
    pinned_item_ids: tuple[int, ...]

    def matches(
        self, called: str | None, ivr: frozenset[str], business_code: str | None, caller_tags: frozenset[str]
    ) -> bool:
        return (
            (self.called is None or self.called == called)
            and (self.ivr_path is None or self.ivr_path in ivr)
            and (self.business_code is None or self.business_code == business_code)
            and (not self.caller_tags or not self.caller_tags.isdisjoint(caller_tags))
        )


def _view(r: ScreenPopRule) -> RuleView:
    return RuleView(
        r.id,
        r.name,
        r.priority,
        r.called,
        r.ivr_path,
        r.business_code,
        frozenset(t.casefold() for t in r.caller_tags),
        tuple(r.category_ids),
        tuple(r.tags),
        tuple(r.pinned_item_ids),
    )


class RuleCache:
    """The enabled rules, highest priority first, reloaded at most every `ttl` seconds. A write
    in this process forgets them at once; other processes see it within `ttl`."""

    def __init__(self, ttl: float = RULE_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._rules: list[RuleView] | None = None
        self._until = 0.0
        self._generation = 0

    def forget(self) -> None:
        self._rules = None
        self._generation += 1

    async def get(self, session: AsyncSession) -> list[RuleView]:
        now = time.monotonic()
        if self._rules is not None and now < self._until:
            return self._rules
        generation = self._generation
        rows = (
            await session.scalars(
                select(ScreenPopRule)
                .where(ScreenPopRule.enabled.is_(True))
                .order_by(ScreenPopRule.priority.desc(), ScreenPopRule.id)
            )
        ).all()
        rules = [_view(r) for r in rows]
        if generation == self._generation:  # no write forgot the cache while this load ran
            self._rules, self._until = rules, now + self.ttl
        return rules


def rule_cache(app: Any) -> RuleCache:
    cache = getattr(app.state, "screen_pop_rules", None)
    if cache is None:
        cache = app.state.screen_pop_rules = RuleCache()
    return cache


# ---------------------------------------------------------------- rules: writes


def rule_etag(rule: ScreenPopRule) -> str:
    return make_etag("screen-pop-rule", rule.id, rule.row_version)


def _snapshot(rule: ScreenPopRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "enabled": rule.enabled,
        "priority": rule.priority,
        "called": rule.called,
        "ivr_path": rule.ivr_path,
        "business_code": rule.business_code,
        "caller_tags": list(rule.caller_tags),
        "category_ids": list(rule.category_ids),
        "tags": list(rule.tags),
        "pinned_item_ids": list(rule.pinned_item_ids),
    }


def rule_out(rule: ScreenPopRule) -> ScreenPopRuleOut:
    return ScreenPopRuleOut(
        id=rule.id,
        **_snapshot(rule),
        row_version=rule.row_version,
        etag=rule_etag(rule),
        created_by=rule.created_by,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
    )


async def _clean(session: AsyncSession, values: dict[str, Any]) -> dict[str, Any]:
    """Normalize and validate a rule's merged fields (the whole rule, after a PATCH too)."""
    out = dict(values)
    if out["called"] is not None:
        out["called"] = normalize_called(out["called"])
    if out["ivr_path"] is not None:
        out["ivr_path"] = normalize_ivr_path(out["ivr_path"])
    if out["business_code"] is not None:
        out["business_code"] = normalize_business_code(out["business_code"])
    out["caller_tags"] = list(dict.fromkeys(t for t in map(normalize_caller_tag, out["caller_tags"]) if t))
    out["category_ids"] = list(dict.fromkeys(out["category_ids"]))
    out["pinned_item_ids"] = list(dict.fromkeys(out["pinned_item_ids"]))
    if not any(out[c] for c in CONDITIONS):
        raise InvalidInput(
            "A rule needs at least one condition: called, ivr_path, business_code or caller_tags",
            code="rule_without_condition",
            errors=[{"field": c, "message": "set at least one condition"} for c in CONDITIONS],
        )
    if not any(out[t] for t in TARGETS):
        raise InvalidInput(
            "A rule needs at least one target: category_ids, tags or pinned_item_ids",
            code="rule_without_target",
            errors=[{"field": t, "message": "set at least one target"} for t in TARGETS],
        )
    if out["category_ids"]:
        found = set(
            (await session.scalars(select(TaxonomyNode.id).where(TaxonomyNode.id.in_(out["category_ids"])))).all()
        )
        unknown = [c for c in out["category_ids"] if c not in found]
        if unknown:
            raise InvalidInput(
                f"Unknown categories: {unknown}",
                code="unknown_category",
                unknown=unknown,
                errors=[{"field": "category_ids", "message": f"unknown: {unknown}"}],
            )
    out["tags"] = [t.name for t in await resolve_tags(session, out["tags"], create_missing=False)]
    if out["pinned_item_ids"]:
        found = set((await session.scalars(select(Item.id).where(Item.id.in_(out["pinned_item_ids"])))).all())
        unknown = [i for i in out["pinned_item_ids"] if i not in found]
        if unknown:
            raise InvalidInput(
                f"Unknown items: {unknown}",
                code="unknown_item",
                unknown=unknown,
                errors=[{"field": "pinned_item_ids", "message": f"unknown: {unknown}"}],
            )
    return out


def _etag_header(response: Response, rule: ScreenPopRule) -> None:
    response.headers["ETag"] = rule_etag(rule)


@router.get("/screen-pop/rules", response_model=Page[ScreenPopRuleOut])
async def list_rules(
    session: DbSession,
    _: Manager,
    page: Paging,
    enabled: Annotated[bool | None, Query(description="Only enabled (or disabled) rules")] = None,
) -> Page[ScreenPopRuleOut]:
    """Every screen-pop rule, oldest first."""
    stmt = select(ScreenPopRule)
    if enabled is not None:
        stmt = stmt.where(ScreenPopRule.enabled.is_(enabled))
    rows, nxt = await paginate_by_id(session, stmt, ScreenPopRule.id, page, descending=False)
    return Page(items=[rule_out(r) for r in rows], next_cursor=nxt)


@router.post("/screen-pop/rules", response_model=ScreenPopRuleOut, status_code=status.HTTP_201_CREATED)
async def create_rule(
    request: Request, response: Response, session: DbSession, actor: Manager, body: ScreenPopRuleIn
) -> ScreenPopRuleOut:
    """A rule: conditions (all that are set must hold; `caller_tags`: any of them) and targets
    (categories and tags must exist, pinned items too). Audited."""
    values = await _clean(session, body.model_dump())
    rule = ScreenPopRule(**values, created_by=actor.actor)
    session.add(rule)
    await session.flush()
    record(session, actor, "screen_pop.rule.create", "screen_pop_rule", rule.id, after=_snapshot(rule))
    await session.commit()
    rule_cache(request.app).forget()
    _etag_header(response, rule)
    return rule_out(rule)


@router.get("/screen-pop/rules/{rule_id}", response_model=ScreenPopRuleOut)
async def get_rule(response: Response, session: DbSession, _: Manager, rule_id: Id) -> ScreenPopRuleOut:
    rule = await get_or_404(session, ScreenPopRule, rule_id, "screen_pop_rule")
    _etag_header(response, rule)
    return rule_out(rule)


@router.patch("/screen-pop/rules/{rule_id}", response_model=ScreenPopRuleOut)
async def update_rule(
    request: Request,
    response: Response,
    session: DbSession,
    actor: Manager,
    rule_id: Id,
    body: ScreenPopRulePatch,
    if_match: IfMatch = None,
) -> ScreenPopRuleOut:
    """Only the fields sent change (`null` clears a condition); the result must still have a
    condition and a target. Needs `If-Match` (428 without, 412 when stale). Audited."""
    rule = await get_or_404(session, ScreenPopRule, rule_id, "screen_pop_rule")
    check_if_match(if_match, rule_etag(rule), rule.row_version)
    before = _snapshot(rule)
    sent = body.model_dump(exclude_unset=True)
    for key in ("name", "enabled", "priority", *CONDITIONS[3:], *TARGETS):
        if key in sent and sent[key] is None:  # not nullable: null means "leave as is"
            del sent[key]
    values = await _clean(session, {**before, **sent})
    for key, value in values.items():
        setattr(rule, key, value)
    after = _snapshot(rule)
    if after != before:
        rule.updated_at = utcnow()
        await session.flush()
        record(session, actor, "screen_pop.rule.update", "screen_pop_rule", rule.id, **changes(before, after))
        await session.commit()
        rule_cache(request.app).forget()
    _etag_header(response, rule)
    return rule_out(rule)


@router.delete("/screen-pop/rules/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(
    request: Request, session: DbSession, actor: Manager, rule_id: Id, if_match: IfMatch = None
) -> None:
    """Needs `If-Match`. Audited with the rule as it was."""
    rule = await get_or_404(session, ScreenPopRule, rule_id, "screen_pop_rule")
    check_if_match(if_match, rule_etag(rule), rule.row_version)
    record(session, actor, "screen_pop.rule.delete", "screen_pop_rule", rule.id, before=_snapshot(rule))
    await session.delete(rule)
    await session.commit()
    rule_cache(request.app).forget()


# ---------------------------------------------------------------- the screen pop


@dataclass(slots=True)
class _Pick:
    item_id: int
    reason: str
    rule_id: int | None = None
    category_id: int | None = None
    tag: str | None = None
    score: float | None = None


def agent_script(version: ItemVersion) -> str:
    own = (version.channel_answers or {}).get(AGENT)
    return plain_text(answer_for(version, AGENT), "html" if own else version.body_format).strip()


async def _shown(session: AsyncSession, caller: Any, ids: list[int]) -> dict[int, ItemVersion]:
    if not ids:
        return {}
    stmt = (
        shown_select(caller)
        .where(Item.id.in_(ids))
        .options(raiseload(ItemVersion.categories), raiseload(ItemVersion.tags))
    )
    return {item.id: version for item, version in (await session.execute(stmt)).all()}


def _split_tags(values: list[str] | None) -> frozenset[str]:
    tags = [normalize_caller_tag(t).casefold() for v in values or [] for t in v.split(",")]
    return frozenset(t for t in tags if t)


@router.get("/channels/agent/screen-pop", response_model=ScreenPopOut)
async def screen_pop(
    request: Request,
    session: DbSession,
    principal: MaybePrincipal,
    called: Annotated[str | None, Query(max_length=40, description="The dialled number (DNIS)")] = None,
    ivr_path: Annotated[str | None, Query(max_length=200, description="The caller's IVR node path: 1/3/2")] = None,
    business_code: Annotated[str | None, Query(max_length=64)] = None,
    caller_tags: Annotated[
        list[str] | None, Query(max_length=20, description="Repeat or comma-separate: VIP,投诉")
    ] = None,
    q: Annotated[str, Query(max_length=1_000, description="Free text, searched like /search")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Response:
    """The recommended items for a call, each with the agent script (坐席话术): pinned items of
    the matching rules first, then their categories' and tags' newest items, then search hits for
    `q`. Staff with `knowledge:read` or an agent-channel client; only what the caller may read on
    the agent channel ever appears."""
    caller = await channel_caller(request, principal, AGENT)
    policy = await check_rate(request, caller)
    number = normalize_called(called) if called else None
    path = normalize_ivr_path(ivr_path) if ivr_path else None
    code = normalize_business_code(business_code) if business_code else None
    tags = _split_tags(caller_tags)
    if len(tags) > 20:
        raise InvalidInput(
            "At most 20 caller tags",
            code="too_many_caller_tags",
            errors=[{"field": "caller_tags", "message": "at most 20"}],
        )
    prefixes = ivr_prefixes(path) if path else frozenset()
    rules = [r for r in await rule_cache(request.app).get(session) if r.matches(number, prefixes, code, tags)]
    warnings: list[str] = []
    picks: dict[int, _Pick] = {}

    # 1. pinned, checked in the database (unpublished, expired, unreadable ones drop out here)
    pinned = list(dict.fromkeys((i, r.id) for r in rules for i in r.pinned_item_ids))
    pinned_versions = await _shown(session, caller, [i for i, _ in pinned])
    for item_id, rule_id in pinned:
        if item_id in pinned_versions and item_id not in picks and len(picks) < limit:
            picks[item_id] = _Pick(item_id, "pinned", rule_id=rule_id)

    # 2. the rules' categories, then their tags: the engine's browse, newest first
    backend: SearchBackend = request.app.state.services["search"]
    browses: list[tuple[str, int, int | None, str | None]] = list(
        dict.fromkeys(
            [("category", r.id, c, None) for r in rules for c in r.category_ids]
            + [("tag", r.id, None, t) for r in rules for t in r.tags]
        )
    )
    seen_targets: set[tuple[int | None, str | None]] = set()
    principals = principals_for_search(caller.principal)
    browsed = 0
    for reason, rule_id, category_id, tag in browses:
        if len(picks) >= limit:
            break
        if (category_id, tag) in seen_targets:
            continue
        seen_targets.add((category_id, tag))
        if browsed == MAX_BROWSES:
            warnings.append(f"only the first {MAX_BROWSES} categories and tags of the matching rules were browsed")
            break
        browsed += 1
        filters = SearchFilters(
            category_ids=[category_id] if category_id else [],
            tags=[tag] if tag else [],
            statuses=["published"],
            valid_at=utcnow(),
        )
        try:
            found = await backend.search(
                SearchQuery(
                    text="",
                    principals=principals,
                    channel=AGENT,
                    filters=filters,
                    limit=limit,
                    highlight=False,
                    facets=False,
                )
            )
        except SearchUnavailable:
            warnings.append("search is unavailable: only pinned items are shown")
            break
        for hit in found.hits:
            if hit.item_id not in picks and len(picks) < limit:
                picks[hit.item_id] = _Pick(hit.item_id, reason, rule_id=rule_id, category_id=category_id, tag=tag)

    # 3. the search for q, same engine and ranking as /search
    search_id = None
    if q.strip() and len(picks) < limit:
        try:
            out = await search_service.search(
                session,
                backend,
                request.app.state.search_log,
                caller.principal,
                search_service.SearchParams(q=q, channel=AGENT, limit=limit, highlight=False, facets=False),
                request.app.state.services.get("semantic"),
            )
        except AppError as e:
            if e.status != 503:
                raise
            warnings.append("search is unavailable: no search results")
        else:
            search_id = out.search_id
            warnings += out.warnings
            for h in out.items:
                if h.item_id not in picks and len(picks) < limit:
                    picks[h.item_id] = _Pick(h.item_id, "search", score=h.score)

    # The engine's hits checked in the database too (the index may lag a change by a moment).
    versions = {**pinned_versions, **await _shown(session, caller, [i for i in picks if i not in pinned_versions])}
    items = [
        ScreenPopItemOut(
            item_id=p.item_id,
            version=versions[p.item_id].number,
            title=versions[p.item_id].title,
            question=versions[p.item_id].question,
            reason=p.reason,
            rule_id=p.rule_id,
            category_id=p.category_id,
            tag=p.tag,  # type: ignore[arg-type]
            score=p.score,
            agent_script=agent_script(versions[p.item_id]),
        )
        for p in picks.values()
        if p.item_id in versions
    ]
    body = ScreenPopOut(
        called=number,
        ivr_path=path,
        business_code=code,
        rules=[MatchedRuleOut(id=r.id, name=r.name, priority=r.priority) for r in rules],
        items=items,
        search_id=search_id,
        warnings=warnings,
    )
    headers = {"Cache-Control": "private, no-store"}
    if policy:
        headers["RateLimit-Policy"] = policy
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
