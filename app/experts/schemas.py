from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from app.core.schemas import Id, Out, Schema
from app.knowledge.schemas import TagName

Title = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
AnswerText = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class ProfileIn(Schema):
    """An expert's profile; PUT replaces it (create or update)."""

    bio: str = Field("", max_length=2000)
    category_ids: list[Id] = Field(
        default_factory=list,
        max_length=100,
        description="Taxonomy node ids; questions in their subtrees are routed here",
    )
    tags: list[TagName] = Field(default_factory=list, max_length=100)
    available: bool = Field(True, description="false: on leave, no new questions")


class ProfileOut(Out):
    user_id: int
    username: str
    display_name: str
    bio: str
    category_ids: list[int]
    tags: list[str]
    available: bool
    created_at: datetime
    updated_at: datetime
    row_version: int
    etag: str


class QuestionIn(Schema):
    title: Title
    text: Text = ""
    category_ids: list[Id] = Field(default_factory=list, max_length=20)
    tags: list[TagName] = Field(default_factory=list, max_length=20)
    item_id: Id | None = Field(None, description="The knowledge item the question is about (one I may read)")


class AnswerIn(Schema):
    body: AnswerText


class CloseIn(Schema):
    reason: str = Field("", max_length=1000)


class DraftIn(Schema):
    """Options of the knowledge draft made from an answer (an FAQ by default)."""

    item_type: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "faq"
    title: Title | None = Field(None, description="Default: the question's title")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Per the item type's template")
    submit: bool = Field(False, description="Submit the draft for review at once")


class AnswerOut(Out):
    id: int
    question_id: int
    author_id: int | None
    body: str
    accepted: bool
    created_at: datetime


QuestionState = Literal["open", "answered", "resolved", "closed"]


class QuestionOut(Out):
    id: int
    asker_id: int | None
    title: str
    text: str
    category_ids: list[int]
    tags: list[str]
    item_id: int | None
    state: str = Field(description="open → answered → resolved, or closed")
    routing: str = Field(
        description="experts: routed to the experts of its categories and tags; fallback: no "
        "expert matched, routed to the knowledge managers (experts:manage)"
    )
    routed_to: list[int] = Field(description="User ids the question is on the to-do list of")
    accepted_answer_id: int | None
    draft_item_id: int | None = Field(description="The knowledge item made from an answer")
    answers: list[AnswerOut]
    created_at: datetime
    updated_at: datetime
    answered_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    row_version: int
    etag: str


class DraftOut(Out):
    question_id: int
    answer_id: int
    item_id: int
    version: int
    state: str
    link: str
