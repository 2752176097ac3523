"""Item types open to proposals (the best-practice base, 最佳实践案例): who may write and approve
items of a type without the general knowledge permissions. THE one place the rule lives; the
knowledge and attachment routes and the workflow ask the functions here.

- A proposer (`knowledge:propose_case` for type `case`) may create items of that type only, and
  edit, attach files to, submit, withdraw, reopen, discard or delete *their own* proposal (the item
  they created) while it was never published. They never review or publish it: those actions need
  `knowledge:review` / `knowledge:publish`, or the type's approval permission.
- An approver (`knowledge:approve_case`, the supervisor's role) may approve, reject, publish,
  unpublish and archive versions of that type only, and sees their open versions (the review queue).
- Nobody approves or publishes a version of such a type they wrote or changed (four-eyes always
  applies to proposals, whatever `KB_FOUR_EYES` says): the proposer's own case is never publishable
  by them, even when they also hold the general permissions.
"""

from __future__ import annotations

from app.identity.principal import Principal
from app.knowledge.models import Item, ItemVersion

CASE_TYPE = "case"
PROPOSE_CASE = "knowledge:propose_case"
APPROVE_CASE = "knowledge:approve_case"

# item type -> (proposal permission, approval permission)
PROPOSAL_TYPES: dict[str, tuple[str, str]] = {CASE_TYPE: (PROPOSE_CASE, APPROVE_CASE)}
PROPOSER_ACTIONS = frozenset({"submit", "withdraw", "reopen"})
APPROVER_ACTIONS = frozenset({"approve", "reject", "publish", "unpublish", "archive"})
# The general permission of each workflow action, and the proposal-type permission that may stand in.
SCOPED_FOR_ACTION: dict[str, str] = {
    **{a: PROPOSE_CASE for a in PROPOSER_ACTIONS},
    **{a: APPROVE_CASE for a in APPROVER_ACTIONS},
}


def is_proposal_type(item_type: str) -> bool:
    return item_type in PROPOSAL_TYPES


def approvable_types(principal: Principal) -> list[str]:
    """The proposal types whose versions this caller may review through the approval permission."""
    return [t for t, (_, approve) in PROPOSAL_TYPES.items() if principal.can(approve)]


def may_create(principal: Principal, item_type: str) -> bool:
    if principal.can("knowledge:create"):
        return True
    scoped = PROPOSAL_TYPES.get(item_type)
    return scoped is not None and principal.can(scoped[0])


def is_own_proposal(principal: Principal, item: Item) -> bool:
    """The caller proposed this item (created it under the proposal permission) and it was never published."""
    scoped = PROPOSAL_TYPES.get(item.item_type)
    return (
        scoped is not None
        and principal.kind == "user"
        and principal.can(scoped[0])
        and item.created_by == principal.id
        and item.status == "draft"
    )


def approves(principal: Principal, item: Item) -> bool:
    scoped = PROPOSAL_TYPES.get(item.item_type)
    return scoped is not None and principal.can(scoped[1])


def may_edit(principal: Principal, item: Item) -> bool:
    """Draft edits, attachments, discard and delete (the item ACL is checked besides)."""
    return principal.can("knowledge:edit") or is_own_proposal(principal, item)


def sees_open_versions(principal: Principal, item: Item) -> bool:
    """Beyond editors (who see every version): the proposer their proposal, approvers the type's versions."""
    return is_own_proposal(principal, item) or approves(principal, item)


def may_transition(principal: Principal, item: Item, version: ItemVersion, action: str, general: str) -> bool:
    """`general`: the action's own permission (app/knowledge/workflow.py PERMISSIONS)."""
    if principal.can(general):
        return True
    if action in PROPOSER_ACTIONS:
        return is_own_proposal(principal, item)
    return action in APPROVER_ACTIONS and approves(principal, item)
