"""The analytics tests reuse the knowledge fixtures (a 知识分类 tree, staff of every role, `Kb`)."""

import pytest

from tests.conftest import Actor, People
from tests.knowledge.conftest import Kb, agent, author, kb, publisher, reviewer


@pytest.fixture
async def supervisor(people: People) -> Actor:
    return await people.make("zhao.min", role="supervisor")


__all__ = ["Kb", "agent", "author", "kb", "publisher", "reviewer", "supervisor"]
