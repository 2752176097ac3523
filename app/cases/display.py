"""What a case shows where only a body is shown (channel renderings, the search text): its body
followed by the situation, handling and outcome sections, so an agent reading a best practice on
the softphone or finding it by search sees the whole case. Other item types: the body unchanged."""

from __future__ import annotations

import html

from app.cases.defaults import CASE_ATTRIBUTES
from app.knowledge.models import ItemVersion
from app.knowledge.proposals import CASE_TYPE


def shown_body(item_type: str, version: ItemVersion) -> str:
    body = version.body or ""
    if item_type != CASE_TYPE:
        return body
    values = version.attributes or {}
    sections = [
        (name.split(" / ")[0], str(values[code])) for code, (name, _) in CASE_ATTRIBUTES.items() if values.get(code)
    ]
    if not sections:
        return body
    if version.body_format == "markdown":
        return "\n\n".join([body, *(f"### {title}\n\n{text}" for title, text in sections)]).strip()
    parts = "".join(f"<h3>{html.escape(title)}</h3><p>{html.escape(text)}</p>" for title, text in sections)
    return body + parts
