"""The `case` item type: situation, handling and outcome as required text attributes of its template
(checked on submit and publish, like any template), the call recording as an ordinary attachment of
the version (POST /items/{id}/attachments). Created at start-up when missing; an administrator may
change the template afterwards (the type's code and the permissions stay)."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.knowledge.proposals import CASE_TYPE
from app.taxonomy.models import AttributeDefinition, ItemType, Template, template_attributes

TEMPLATE_NAME = "最佳实践案例 / best-practice case"
# code -> (name, description); all text, all required before submit/publish.
CASE_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "case_situation": ("情况 / situation", "What the customer called about and the circumstances"),
    "case_handling": ("处理 / handling", "What the agent did and said, step by step"),
    "case_outcome": ("结果 / outcome", "How it ended: resolved, customer feedback, follow-up"),
}


async def ensure_case_type(session: AsyncSession) -> ItemType:
    """The attribute definitions, the template and the item type, each when missing (flushed; the caller commits)."""
    defs = {
        d.code: d
        for d in (
            await session.scalars(select(AttributeDefinition).where(AttributeDefinition.code.in_(CASE_ATTRIBUTES)))
        ).all()
    }
    for code, (name, description) in CASE_ATTRIBUTES.items():
        if code not in defs:
            defs[code] = AttributeDefinition(
                code=code, name=name, type="text", options=[], required=True, description=description
            )
            session.add(defs[code])
    item_type = await session.get(ItemType, CASE_TYPE)
    if item_type is not None:
        await session.flush()
        return item_type
    template = await session.scalar(select(Template).where(Template.name == TEMPLATE_NAME))
    if template is None:
        template = Template(name=TEMPLATE_NAME, description="情况、处理、结果 (situation, handling, outcome)")
        session.add(template)
        await session.flush()
        await session.execute(
            insert(template_attributes),
            [
                {"template_id": template.id, "attribute_id": defs[c].id, "position": i}
                for i, c in enumerate(CASE_ATTRIBUTES)
            ],
        )
    item_type = ItemType(code=CASE_TYPE, name="最佳实践案例", template_id=template.id, review_required=True)
    session.add(item_type)
    await session.flush()
    return item_type
