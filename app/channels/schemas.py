"""Request and response shapes of the channel delivery API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.core.schemas import Id, Schema

# ---------------------------------------------------------------- channel reads


class ItemRef(BaseModel):
    """An item a channel shows, by reference: enough for a list or a link."""

    item_id: Id
    version: int
    title: str
    question: str = ""
    item_type: str
    published_at: datetime | None = None


class RelatedOut(ItemRef):
    reason: str = Field(description="categories: shares categories or tags; similar: found by search")


class AttachmentLink(BaseModel):
    id: Id
    file_name: str
    mime: str
    size: int
    url: str = Field(description="Download (needs attachments:download)")


class AnswerOut(BaseModel):
    item_id: Id
    version: int
    title: str
    question: str = Field(description="The standard question")
    matched_question: str = Field(description="The standard or similar question closest to the caller's words")
    answer: str = Field(description="The channel's answer as plain text (its own answer, else the body)")
    score: float
    url: str = Field(description="The item on this channel (GET .../channels/{channel}/items/{id})")
    related: list[RelatedOut] | None = Field(None, description="agent only")
    attachments: list[AttachmentLink] | None = Field(None, description="agent only: the files the agent may open")


class AnswersOut(BaseModel):
    channel: str
    query: str
    search_id: str = Field(description="Pass as `search_id` when opening an answer or giving feedback")
    total: int
    relaxed: bool = Field(description="No item had enough of the query's words; these match some of them")
    items: list[AnswerOut]
    warnings: list[str] = []


class CategoryNodeOut(BaseModel):
    id: Id
    name: str
    count: int = Field(description="Items this caller sees on the channel in this node and below")
    children: list[CategoryNodeOut] = []


class CategoryTreeOut(BaseModel):
    channel: str
    taxonomy_id: Id
    taxonomy: str
    total: int = Field(description="Items this caller sees on the channel in the whole taxonomy")
    nodes: list[CategoryNodeOut]


# ---------------------------------------------------------------- CTI screen pop (app/channels/screenpop.py)

RuleName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Called = Annotated[str, StringConstraints(min_length=1, max_length=40)]
IvrPath = Annotated[str, StringConstraints(min_length=1, max_length=200)]
BusinessCode = Annotated[str, StringConstraints(min_length=1, max_length=64)]
CallerTag = Annotated[str, StringConstraints(min_length=1, max_length=64)]
RuleTag = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Priority = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]

_CALLED = "The dialled number (DNIS): 10086, 95588, 4008-123-456; stored as digits only (+86 dropped)"
_IVR = "IVR node path, node-wise prefix: 1/3/2 matches 1/3/2 and 1/3/2/5, not 1/3/20"
_BUSINESS = "A business code from the IVR or CRM (CARD_LOSS), matched case-insensitively"
_CALLER_TAGS = "Matches when the call carries any of these tags (VIP, 投诉)"


class ScreenPopRuleIn(Schema):
    name: RuleName
    enabled: bool = True
    priority: Priority = Field(0, description="Higher first")
    called: Called | None = Field(None, description=_CALLED)
    ivr_path: IvrPath | None = Field(None, description=_IVR)
    business_code: BusinessCode | None = Field(None, description=_BUSINESS)
    caller_tags: list[CallerTag] = Field(default_factory=list, max_length=20, description=_CALLER_TAGS)
    category_ids: list[Id] = Field(default_factory=list, max_length=20, description="Taxonomy nodes (subtrees)")
    tags: list[RuleTag] = Field(default_factory=list, max_length=20, description="Tag names")
    pinned_item_ids: list[Id] = Field(default_factory=list, max_length=20, description="Shown first, in this order")


class ScreenPopRulePatch(Schema):
    """Only the fields sent change; `null` clears a condition."""

    name: RuleName | None = None
    enabled: bool | None = None
    priority: Priority | None = None
    called: Called | None = Field(None, description=_CALLED)
    ivr_path: IvrPath | None = Field(None, description=_IVR)
    business_code: BusinessCode | None = Field(None, description=_BUSINESS)
    caller_tags: list[CallerTag] | None = Field(None, max_length=20)
    category_ids: list[Id] | None = Field(None, max_length=20)
    tags: list[RuleTag] | None = Field(None, max_length=20)
    pinned_item_ids: list[Id] | None = Field(None, max_length=20)


class ScreenPopRuleOut(BaseModel):
    id: Id
    name: str
    enabled: bool
    priority: int
    called: str | None
    ivr_path: str | None
    business_code: str | None
    caller_tags: list[str]
    category_ids: list[int]
    tags: list[str]
    pinned_item_ids: list[int]
    row_version: int
    etag: str
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class MatchedRuleOut(BaseModel):
    id: Id
    name: str
    priority: int


class ScreenPopItemOut(BaseModel):
    item_id: Id
    version: int
    title: str
    question: str
    reason: Literal["pinned", "category", "tag", "search"]
    rule_id: Id | None = Field(None, description="The rule that brought it (pinned, category, tag)")
    category_id: Id | None = None
    tag: str | None = None
    score: float | None = Field(None, description="Search hits only")
    agent_script: str = Field(description="坐席话术: the agent channel's answer as plain text")


class ScreenPopOut(BaseModel):
    called: str | None = Field(description="The dialled number as matched (digits only)")
    ivr_path: str | None
    business_code: str | None
    rules: list[MatchedRuleOut]
    items: list[ScreenPopItemOut]
    search_id: str | None = Field(None, description="With q: pass to POST /search/click when the agent opens a hit")
    warnings: list[str] = []


# ---------------------------------------------------------------- end CTI screen pop
