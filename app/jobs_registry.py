"""Importing this module registers every job handler (each domain's `jobs.py`)."""

from app.analytics import jobs as analytics_jobs  # noqa: F401
from app.attachments import jobs as attachments_jobs  # noqa: F401
from app.channels import jobs as channels_jobs  # noqa: F401
from app.feedback import jobs as feedback_jobs  # noqa: F401
from app.identity import jobs as identity_jobs  # noqa: F401
from app.imports import jobs as imports_jobs  # noqa: F401
from app.knowledge import jobs as knowledge_jobs  # noqa: F401
from app.learning import jobs as learning_jobs  # noqa: F401
from app.search import jobs as search_jobs  # noqa: F401
