from tests.feedback.conftest import Kb, agent, author, kb, publisher, report, reviewer, task_act

__all__ = ["Kb", "agent", "author", "kb", "publisher", "report", "reviewer", "task_act"]
