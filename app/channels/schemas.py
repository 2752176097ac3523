from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.core.schemas import Id

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
