"""The expert network tests reuse the knowledge fixtures: a 知识分类 tree, staff of every role, `Kb`."""

from __future__ import annotations

from tests.knowledge.conftest import Kb, agent, author, kb, publisher, reviewer

__all__ = ["Kb", "agent", "author", "kb", "publisher", "reviewer"]
