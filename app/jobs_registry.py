"""Importing this module registers every job handler (each domain's `jobs.py`)."""

from app.identity import jobs as identity_jobs  # noqa: F401
