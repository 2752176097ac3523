"""Field-by-field comparison of two versions, with unified text diffs (difflib)."""

from __future__ import annotations

import difflib
import re
from typing import Any

from app.knowledge.models import ItemVersion
from app.knowledge.schemas import CHANNELS, DiffOut, SetChange, TextChange

# Where an HTML body breaks into lines for the diff (it is often stored on one line).
_BLOCK_END = re.compile(r"(</(?:p|div|li|tr|h[1-6]|table|thead|tbody|ul|ol|blockquote|pre)>|<br\s*/?>)", re.IGNORECASE)


def _lines(text: str) -> list[str]:
    return [ln for ln in _BLOCK_END.sub(r"\1\n", text).splitlines()]


def unified(before: str, after: str, name: str, a: int, b: int) -> str:
    return "\n".join(
        difflib.unified_diff(_lines(before), _lines(after), fromfile=f"v{a}/{name}", tofile=f"v{b}/{name}", lineterm="")
    )


def _texts(v: ItemVersion) -> dict[str, str]:
    out = {
        "title": v.title,
        "question": v.question,
        "similar_questions": "\n".join(v.similar_questions),
        "body": v.body,
        "body_format": v.body_format,
    }
    for c in CHANNELS:
        out[f"answers.{c}"] = (v.channel_answers or {}).get(c, "")
    out["change_note"] = v.change_note
    return out


def _set_change(before: list[Any], after: list[Any], key: Any = None) -> SetChange:
    k = key or (lambda x: x)
    b_keys, a_keys = {k(x) for x in before}, {k(x) for x in after}
    return SetChange(added=[x for x in after if k(x) not in b_keys], removed=[x for x in before if k(x) not in a_keys])


def diff_versions(item_id: int, a: ItemVersion, b: ItemVersion) -> DiffOut:
    """What changed from version `a` to version `b`."""
    changed, unchanged = [], []
    ta, tb = _texts(a), _texts(b)
    for name in ta:
        if ta[name] == tb[name]:
            unchanged.append(name)
            continue
        before: Any = list(a.similar_questions) if name == "similar_questions" else ta[name]
        after: Any = list(b.similar_questions) if name == "similar_questions" else tb[name]
        text_diff = None if name == "body_format" else unified(ta[name], tb[name], name, a.number, b.number)
        changed.append(TextChange(field=name, before=before, after=after, diff=text_diff))

    def node(n: Any) -> dict[str, Any]:
        return {"id": n.id, "name": n.name, "taxonomy_id": n.taxonomy_id}

    cats = _set_change(
        sorted((node(n) for n in a.categories), key=lambda x: x["id"]),
        sorted((node(n) for n in b.categories), key=lambda x: x["id"]),
        key=lambda x: x["id"],
    )
    tags = _set_change(sorted(t.name for t in a.tags), sorted(t.name for t in b.tags))
    channels = _set_change(list(a.channels), list(b.channels))
    files = _set_change(sorted(x.id for x in a.attachments), sorted(x.id for x in b.attachments))
    aa, ab = dict(a.attributes or {}), dict(b.attributes or {})
    attrs = {
        "added": {k: v for k, v in ab.items() if k not in aa},
        "removed": {k: v for k, v in aa.items() if k not in ab},
        "changed": {k: {"before": aa[k], "after": ab[k]} for k in aa if k in ab and aa[k] != ab[k]},
    }
    for name, ch in (("categories", cats), ("tags", tags), ("channels", channels), ("attachments", files)):
        if not (ch.added or ch.removed):
            unchanged.append(name)
    if not any(attrs.values()):
        unchanged.append("attributes")
    return DiffOut(
        item_id=item_id,
        from_version=a.number,
        to_version=b.number,
        changed=changed,
        unchanged=unchanged,
        categories=cats,
        tags=tags,
        channels=channels,
        attachments=files,
        attributes=attrs,
    )
