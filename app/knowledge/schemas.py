from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, StringConstraints, field_validator

from app.core.schemas import Id, Out, Schema
from app.search.schemas import SimilarItemOut

Channel = Literal["agent", "web", "wechat", "app"]
CHANNELS: tuple[str, ...] = ("agent", "web", "wechat", "app")
Visibility = Literal["public", "internal"]
BodyFormat = Literal["html", "markdown"]

MAX_SIMILAR_QUESTIONS = 50
Title = Annotated[str, StringConstraints(min_length=1, max_length=300)]
Question = Annotated[str, StringConstraints(max_length=500)]
Answer = Annotated[str, StringConstraints(max_length=20_000)]
Note = Annotated[str, StringConstraints(max_length=1000)]
TagName = Annotated[str, StringConstraints(min_length=1, max_length=200)]  # normalized by resolve_tags
# Subjects of ACL grants: who may read (or edit).
Subject = Annotated[str, StringConstraints(pattern=r"^(public|internal|(role|dept|client|user):[1-9][0-9]{0,17})$")]


class ChannelAnswers(Schema):
    """Per-channel answers; a missing one falls back to the body (see `answer_for`)."""

    agent: Answer | None = Field(None, description="坐席话术: the script an agent reads out")
    web: Answer | None = None
    wechat: Answer | None = Field(None, description="Short text for WeChat")
    app: Answer | None = None


class ContentFields(Schema):
    """Everything a version holds. In a PATCH only the fields sent change."""

    title: Title | None = None
    question: Question | None = Field(None, description="The standard question (标准问)")
    similar_questions: list[Question] | None = Field(
        None,
        max_length=500,
        description=f"相似问法; blanks and duplicates dropped, at most {MAX_SIMILAR_QUESTIONS} remain",
    )
    body: str | None = Field(None, description="Sanitized HTML (script and event handlers stripped) or Markdown")
    body_format: BodyFormat | None = None
    channel_answers: ChannelAnswers | None = None
    channels: list[Channel] | None = Field(
        None, min_length=1, max_length=4, description="Channels the version is shown on"
    )
    category_ids: list[Id] | None = Field(None, max_length=100, description="Taxonomy node ids, any trees")
    tags: list[TagName] | None = Field(None, max_length=100, description="Tag names")
    attributes: dict[str, Any] | None = Field(None, description="Attribute code -> value, per the type's template")
    change_note: Note | None = None


class ItemCreate(ContentFields):
    item_type: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "faq"
    title: Title
    owner_id: Id | None = Field(None, description="知识所有者; defaults to the creator")
    visibility: Visibility = "internal"
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    review_due: date | None = None
    source: Annotated[str | None, StringConstraints(min_length=1, max_length=64)] = None
    external_id: Annotated[str | None, StringConstraints(min_length=1, max_length=128)] = None


class ItemUpdate(Schema):
    """Item fields (not content: that lives in versions, see PATCH /items/{id}/draft)."""

    item_type: Annotated[str | None, StringConstraints(min_length=1, max_length=32)] = None
    owner_id: Id | None = None
    visibility: Visibility | None = None
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    review_due: date | None = None
    source: Annotated[str | None, StringConstraints(min_length=1, max_length=64)] = None
    external_id: Annotated[str | None, StringConstraints(min_length=1, max_length=128)] = None


class DraftUpdate(ContentFields):
    pass


class RestoreIn(Schema):
    change_note: Note | None = None


class TransitionIn(Schema):
    reason: Note | None = Field(None, description="Required to reject: why, for the author")
    note: Note | None = Field(None, description="A comment kept with the version (approve, submit, ...)")
    publish_at: AwareDatetime | None = Field(None, description="Publish later (定时发布); only for publish")


class NodeRef(Out):
    id: int
    taxonomy_id: Id
    name: str
    path: str


class AttachmentRef(Out):
    id: int
    file_name: str
    mime: str
    size: int


class VersionOut(Out):
    number: int
    state: str
    title: str
    question: str
    similar_questions: list[str]
    body: str
    body_format: str
    channel_answers: dict[str, str]
    answers: dict[str, str] = Field(
        default_factory=dict, description="The answer each channel shows (its own or the body)"
    )
    channels: list[str]
    categories: list[NodeRef]
    tags: list[str]
    attributes: dict[str, Any]
    attachments: list[AttachmentRef] = Field(default_factory=list)
    change_note: str
    author_id: Id | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    reviewed_by: int | None
    reviewed_at: datetime | None
    review_note: str | None
    publish_at: datetime | None
    published_at: datetime | None
    published_by: int | None
    restored_from: int | None

    @field_validator("tags", mode="before")
    @classmethod
    def _tag_names(cls, v: Any) -> Any:
        return sorted(getattr(t, "name", t) for t in v)


class VersionSummary(Out):
    number: int
    state: str
    title: str
    change_note: str
    author_id: Id | None
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    publish_at: datetime | None
    restored_from: int | None


class ItemOut(Out):
    id: int
    item_type: str
    owner_id: Id | None
    status: str = Field(description="draft (never published), published, archived")
    visibility: str
    valid_from: datetime | None
    valid_to: datetime | None
    review_due: date | None
    source: str | None
    external_id: str | None
    latest_version_no: int
    published_version_no: int | None
    row_version: int = Field(description="Bumped on every change; the ETag")
    etag: str
    expired: bool = Field(description="valid_to has passed (readers no longer see it)")
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    version: VersionOut = Field(description="Editors see the latest version; readers the published one")
    allowed_actions: list[str] = Field(default_factory=list, description="Workflow actions allowed on `version` now")
    possible_duplicates: list[SimilarItemOut] | None = Field(
        None,
        description="On create and submit: published items that seem to answer the same question "
        "(GET /items/{id}/similar for the full list); empty when none, null elsewhere",
    )


class ItemSummary(Out):
    id: int
    item_type: str
    status: str
    visibility: str
    owner_id: Id | None
    valid_from: datetime | None
    valid_to: datetime | None
    review_due: date | None
    updated_at: datetime
    version_no: int
    state: str
    title: str
    question: str


class ReviewOut(Out):
    item_id: Id
    item_type: str
    number: int
    state: str
    title: str
    author_id: Id | None
    change_note: str
    submitted_at: datetime | None
    reviewed_at: datetime | None
    review_note: str | None
    publish_at: datetime | None
    updated_at: datetime


class TextChange(Schema):
    field: str
    before: Any
    after: Any
    diff: str | None = Field(None, description="Unified diff (text fields)")


class SetChange(Schema):
    added: list[Any]
    removed: list[Any]


class DiffOut(Schema):
    item_id: Id
    from_version: int
    to_version: int
    changed: list[TextChange]
    unchanged: list[str]
    categories: SetChange
    tags: SetChange
    channels: SetChange
    attachments: SetChange = Field(description="Attachment ids")
    attributes: dict[str, dict[str, Any]] = Field(
        description="added / removed / changed: code -> value (changed: {before, after})"
    )


Access = Literal["read", "edit"]


class GrantIn(Schema):
    subject: Subject = Field(description='"public", "internal", "role:N", "dept:N", "client:N", "user:N"')
    access: Access = "read"


class AclIn(Schema):
    grants: list[GrantIn] = Field(max_length=200)


class GrantOut(Out):
    subject: str
    access: str


class InheritedGrant(Schema):
    node_id: Id
    from_node_id: Id = Field(description="The node whose grants apply (itself or its nearest ancestor)")
    subject: str
    access: str


class ItemAclOut(Schema):
    item_id: Id
    grants: list[GrantOut] = Field(description="Grants on the item itself (they override categories)")
    inherited: list[InheritedGrant] = Field(description="Grants from the item's categories")
    readers: list[str] = Field(description="The effective read set")
    editors: list[str] = Field(description="Effective edit grants; empty means anyone with knowledge:edit")


class NodeAclOut(Schema):
    node_id: Id
    grants: list[GrantOut] = Field(description="Grants on the node itself")
    effective: list[InheritedGrant] = Field(
        description="What applies to items in this node: per access, its own grants or its nearest "
        "ancestor's; empty means the default (all staff, plus public for public items)"
    )
