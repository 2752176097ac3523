"""Checking and scoring answers. One rule per kind, documented here and in the README:

- single choice, true/false: the right key, full score, else 0;
- multiple choice: all or nothing (exactly the right set of keys; a missing or an extra key is 0);
- fill-in: the answer matches one accepted answer after folding (full/half width, traditional →
  simplified, case) with spaces and punctuation removed: `１０Ｍ 寬頻` matches `10m宽频`;
- short answer: a grader's score (0 … the question's score); until then `None`.
"""

from __future__ import annotations

from typing import Any

from app.core.errors import InvalidInput
from app.search.analysis import compact, normalize

TRUE, FALSE = "true", "false"


def fold(text: str) -> str:
    """The form two option texts or two fill-in answers are compared in."""
    return compact(text) or normalize(text).strip()


def check_answer(question: dict[str, Any], value: Any, field: str) -> Any:
    """The examinee's answer in its stored form, or 422 naming `field`."""
    kind = question["kind"]
    keys = {o["key"] for o in question.get("options", [])}

    def bad(message: str) -> InvalidInput:
        return InvalidInput(
            f"{field}: {message}", code="invalid_answer", field=field, question_id=question["question_id"]
        )

    if value is None:
        return None
    if kind == "single_choice":
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str) or value.strip().upper() not in keys:
            raise bad(f"one of the option keys {sorted(keys)}")
        return value.strip().upper()
    if kind == "multiple_choice":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of option keys")
        chosen = sorted({v.strip().upper() for v in value})
        unknown = [k for k in chosen if k not in keys]
        if unknown:
            raise bad(f"unknown option keys {unknown}; the options are {sorted(keys)}")
        return chosen
    if kind == "true_false":
        if isinstance(value, str) and value.strip().lower() in (TRUE, FALSE):
            value = value.strip().lower() == TRUE
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if not isinstance(value, str):
        raise bad("a text")
    return value.strip()


def score_objective(question: dict[str, Any], answer: Any) -> tuple[float, bool]:
    """(earned, correct) of an objective question; an unanswered question is wrong."""
    key = question["answer"]
    full = float(question["score"])
    if answer is None or answer == "" or answer == []:
        return 0.0, False
    kind = question["kind"]
    if kind == "single_choice":
        right = answer in key
    elif kind == "multiple_choice":
        right = sorted(answer) == sorted(key)
    elif kind == "true_false":
        right = (TRUE if answer else FALSE) == (key[0] if key else None)
    elif kind == "fill_in":
        right = fold(answer) in {fold(a) for a in key}
    else:
        raise ValueError(f"{kind} is not scored automatically")
    return (full if right else 0.0), right
