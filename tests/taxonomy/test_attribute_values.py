"""validate_attribute_values is pure: these tests need no database."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from app.core.errors import InvalidInput
from app.taxonomy.models import AttributeDefinition
from app.taxonomy.service import validate_attribute_values


def attr(code: str, type_: str, options: list[str] | None = None, required: bool = False) -> AttributeDefinition:
    return AttributeDefinition(code=code, name=code, type=type_, options=options or [], required=required)


DEFS = [
    attr("handling_note", "text"),
    attr("fee", "number"),
    attr("effective_date", "date", required=True),
    attr("region", "enum", ["北京", "上海", "广东"], required=True),
    attr("channels", "multi_enum", ["电话", "微信", "APP", "网站"]),
]


def errors_of(values: Any, *, for_publish: bool = False, defs: list[AttributeDefinition] = DEFS) -> dict[str, str]:
    with pytest.raises(InvalidInput) as err:
        validate_attribute_values(defs, values, for_publish=for_publish)
    assert err.value.code == "invalid_attribute" and err.value.status == 422
    return {e["attribute"]: e["type"] for e in err.value.extra["errors"]}


def test_valid_values_are_normalized() -> None:
    out = validate_attribute_values(
        DEFS,
        {
            "handling_note": "  先重启光猫，再检查网线  ",
            "fee": "12.50",
            "effective_date": "2026-12-01",
            "region": " 广东 ",
            "channels": ["微信", "电话"],
        },
        for_publish=True,
    )
    assert out == {
        "handling_note": "先重启光猫，再检查网线",
        "fee": 12.5,
        "effective_date": "2026-12-01",
        "region": "广东",
        "channels": ["电话", "微信"],
    }  # in the options' order


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (10, 10),
        ("10", 10),
        (" -3 ", -3),
        (2.0, 2),
        (0.25, 0.25),
        ("1e3", 1000),
        (".5", 0.5),
        (0, 0),
    ],
)
def test_numbers(raw: Any, expected: float) -> None:
    out = validate_attribute_values(DEFS, {"fee": raw}, for_publish=False)
    assert out == {"fee": expected} and type(out["fee"]) is type(expected)


@pytest.mark.parametrize("raw", [True, "十元", "12元", "1,000", float("nan"), float("inf"), [1], {"v": 1}, "0x10"])
def test_not_numbers(raw: Any) -> None:
    assert errors_of({"fee": raw}) == {"fee": "wrong_type"}


def test_dates() -> None:
    assert validate_attribute_values(DEFS, {"effective_date": date(2026, 2, 28)}, for_publish=False) == {
        "effective_date": "2026-02-28"
    }
    for bad in ("2026-02-30", "2026/01/05", "20260105", "2026-1-5", "明年一月", 20260105, "2026-01-05T08:00:00"):
        assert errors_of({"effective_date": bad}) == {"effective_date": "invalid_date"}, bad


def test_enum_and_multi_enum() -> None:
    assert errors_of({"region": "香港"}) == {"region": "not_in_options"}
    assert errors_of({"region": ["北京"]}) == {"region": "wrong_type"}
    assert errors_of({"channels": ["微信", "微博"]}) == {"channels": "not_in_options"}
    assert errors_of({"channels": ["微信", "微信"]}) == {"channels": "duplicate"}
    assert errors_of({"channels": "微信"}) == {"channels": "wrong_type"}
    assert errors_of({"channels": ["微信", 3]}) == {"channels": "wrong_type"}


def test_text_must_be_text() -> None:
    assert errors_of({"handling_note": 42}) == {"handling_note": "wrong_type"}
    assert errors_of({"handling_note": "长" * 4001}) == {"handling_note": "too_long"}


def test_required_only_when_publishing() -> None:
    assert validate_attribute_values(DEFS, {"fee": 5}, for_publish=False) == {"fee": 5}
    assert errors_of({"fee": 5}, for_publish=True) == {"effective_date": "required", "region": "required"}
    # empty values count as missing, and are dropped from drafts
    assert validate_attribute_values(DEFS, {"region": "", "channels": [], "fee": None}, for_publish=False) == {}
    assert errors_of({"region": "", "effective_date": "2026-01-01"}, for_publish=True) == {"region": "required"}


def test_every_bad_field_is_named() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_attribute_values(
            DEFS, {"unknown_code": 1, "fee": "abc", "region": "香港", "effective_date": "2026-13-01"}, for_publish=True
        )
    errors = err.value.extra["errors"]
    assert {e["field"] for e in errors} == {
        "attributes.unknown_code",
        "attributes.fee",
        "attributes.region",
        "attributes.effective_date",
    }
    assert {e["attribute"]: e["type"] for e in errors}["unknown_code"] == "unknown_attribute"
    assert all(e["message"] for e in errors)
    assert "attributes.fee" in err.value.detail
    # a bad value for a required field is reported once, as the bad value
    assert [e["type"] for e in errors if e["attribute"] == "region"] == ["not_in_options"]


def test_not_an_object_and_no_template() -> None:
    assert errors_of(["region"]) == {None: "not_an_object"}
    assert validate_attribute_values([], {}, for_publish=True) == {}
    assert errors_of({"region": "北京"}, defs=[]) == {"region": "unknown_attribute"}
