"""Every ORM model, imported so Alembic and the metadata see the whole schema."""

from app.analytics.models import FeedbackDay, RollupState, SearchDay
from app.announcements.models import Announcement, AnnouncementRead
from app.attachments.models import Attachment, Blob, BlobText, version_attachments
from app.audit.models import AuditEntry
from app.channels.models import (
    ChannelChange,
    ChannelFeed,
    ChannelFeedback,
    ChannelItemState,
    ChannelView,
    ChannelViewDay,
    ScreenPopRule,
)
from app.core.db import Base
from app.experts.models import ExpertAnswer, ExpertProfile, ExpertQuestion, QuestionRoute
from app.feedback.models import Task
from app.identity.models import ApiClient, Department, RefreshToken, Role, User, user_roles
from app.imports.models import ImportJob, ImportKey, ImportOutcome, ImportRowError, SyncRecord, SyncSource
from app.knowledge.models import AclGrant, Item, ItemReader, ItemVersion, version_categories, version_tags
from app.learning.models import (
    Attempt,
    Exam,
    ExamAudience,
    LearningState,
    Paper,
    Question,
    QuestionCategory,
    QuestionItem,
)
from app.search.models import DictionaryWord, EmbeddingCache, SearchLog, SynonymGroup
from app.study.models import StudyPath, StudyPathItem
from app.taxonomy.models import AttributeDefinition, ItemType, Tag, Taxonomy, TaxonomyNode, Template
from app.workers.models import Job, WorkerHeartbeat

__all__ = [
    "AclGrant",
    "Announcement",
    "AnnouncementRead",
    "ApiClient",
    "Attachment",
    "Attempt",
    "AttributeDefinition",
    "AuditEntry",
    "Base",
    "Blob",
    "BlobText",
    "ChannelChange",
    "ChannelFeed",
    "ChannelFeedback",
    "ChannelItemState",
    "ChannelView",
    "ChannelViewDay",
    "Department",
    "DictionaryWord",
    "EmbeddingCache",
    "Exam",
    "ExamAudience",
    "ExpertAnswer",
    "ExpertProfile",
    "ExpertQuestion",
    "FeedbackDay",
    "ImportJob",
    "ImportKey",
    "ImportOutcome",
    "ImportRowError",
    "Item",
    "ItemReader",
    "ItemType",
    "ItemVersion",
    "Job",
    "LearningState",
    "Paper",
    "Question",
    "QuestionCategory",
    "QuestionItem",
    "QuestionRoute",
    "RefreshToken",
    "Role",
    "RollupState",
    "ScreenPopRule",
    "SearchDay",
    "SearchLog",
    "StudyPath",
    "StudyPathItem",
    "SyncRecord",
    "SyncSource",
    "SynonymGroup",
    "Tag",
    "Task",
    "Taxonomy",
    "TaxonomyNode",
    "Template",
    "User",
    "WorkerHeartbeat",
    "user_roles",
    "version_attachments",
    "version_categories",
    "version_tags",
]
