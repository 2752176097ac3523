"""The named permissions, in the five levels of DESIGN.md.

1. system access  `system:access`  — may use the API at all
2. module         `module:<name>`  — may enter a module (knowledge, search, attachments, admin)
3. operation      `knowledge:publish`, `taxonomy:manage`, ... — may do this action
4. read           `knowledge:read` — may read content (then narrowed per item by the item ACL)
5. download       `attachments:download` — may fetch attachment files

A role holds a list of these; `*` is every permission. A user needs all three of system
access, the module and the operation. A client's scopes are operations: system access and
the modules of its scopes are implied, since a client is created for one purpose.
"""

from __future__ import annotations

import re

SYSTEM_ACCESS = "system:access"
ALL = "*"

MODULES = {
    "module:knowledge": "Knowledge content: items, versions, taxonomies",
    "module:search": "Search",
    "module:attachments": "Attachments",
    "module:admin": "Administration: users, roles, clients, jobs, audit",
    "module:analytics": "Usage analytics and reports",
    "module:learning": "Training and exams (培训考试)",
}

# operation/read/download permission -> (module, description)
OPERATIONS: dict[str, tuple[str, str]] = {
    "knowledge:read": ("module:knowledge", "Read knowledge items (narrowed by item ACLs)"),
    "knowledge:create": ("module:knowledge", "Create items and drafts"),
    "knowledge:edit": ("module:knowledge", "Edit drafts"),
    "knowledge:submit": ("module:knowledge", "Submit a draft for review, withdraw it"),
    "knowledge:review": ("module:knowledge", "Approve or reject versions in review"),
    "knowledge:publish": ("module:knowledge", "Publish approved versions"),
    "knowledge:archive": ("module:knowledge", "Archive items"),
    "knowledge:import": ("module:knowledge", "Bulk import and sync"),
    "knowledge:acl": ("module:knowledge", "Manage item and category ACLs"),
    "taxonomy:manage": ("module:knowledge", "Manage taxonomies, tags, attributes, templates"),
    "channels:manage": ("module:knowledge", "Manage channel delivery: CTI screen-pop rules"),
    "knowledge:owners": ("module:knowledge", "Reassign the items and open tasks of one owner to another"),
    "feedback:report": ("module:knowledge", "Report errors in items (纠错) and follow one's own reports"),
    "feedback:manage": ("module:knowledge", "See and resolve every task, unassigned ones included"),
    "announcements:read": ("module:knowledge", "Read the announcements addressed to me, mark them read"),
    "announcements:manage": ("module:knowledge", "Write announcements (公告), see who has not read them"),
    "knowledge:propose_case": (
        "module:knowledge",
        "Propose best-practice cases (item type `case` only): create, "
        "edit and submit one's own proposals, never review or publish",
    ),
    "knowledge:approve_case": (
        "module:knowledge",
        "Review, publish, unpublish and archive best-practice cases (item type `case` only)",
    ),
    "study:read": ("module:knowledge", "My learning paths (学习路径), my progress, what changed since I read it"),
    "study:manage": ("module:knowledge", "Write learning paths, see every agent's progress"),
    "experts:ask": ("module:knowledge", "Ask the expert network (专家问答), accept an answer, close my question"),
    "experts:answer": ("module:knowledge", "Answer the questions routed to me as an expert"),
    "experts:manage": ("module:knowledge", "Expert profiles; see and answer every question, turn answers into drafts"),
    "search:query": ("module:search", "Search published content"),
    "search:manage": ("module:search", "Dictionary, synonyms, reindex"),
    "attachments:download": ("module:attachments", "Download and preview attachment files"),
    "identity:manage": ("module:admin", "Manage users, roles, departments, clients"),
    "jobs:manage": ("module:admin", "See and retry background jobs"),
    "audit:read": ("module:admin", "Read the audit log"),
    "analytics:read": ("module:analytics", "Read usage analytics: views, searches, helpfulness, stale, throughput"),
    "learning:study": ("module:learning", "Take the exams assigned to me, see my own results"),
    "learning:manage": (
        "module:learning",
        "Question bank (answer keys included), papers, exams, grading, everyone's results",
    ),
}

CATALOG: dict[str, str] = {
    SYSTEM_ACCESS: "Use the API at all",
    **MODULES,
    **{k: v[1] for k, v in OPERATIONS.items()},
    ALL: "Every permission (administrators)",
}


def module_of(permission: str) -> str | None:
    op = OPERATIONS.get(permission)
    return op[0] if op else None


# `import:<source>`: write one sync source only (app/imports); `knowledge:import` writes all of them.
SOURCE_SCOPE = re.compile(r"^import:[a-z0-9][a-z0-9_.-]{0,63}$")


def unknown(permissions: list[str]) -> list[str]:
    return [p for p in permissions if p not in CATALOG and not SOURCE_SCOPE.match(p)]


_AGENT = [
    SYSTEM_ACCESS,
    "module:knowledge",
    "module:search",
    "module:attachments",
    "knowledge:read",
    "search:query",
    "attachments:download",
    "feedback:report",
    "announcements:read",
    "module:learning",
    "learning:study",
    "study:read",
    "experts:ask",
    "experts:answer",
    "knowledge:propose_case",
]
_ANALYST = ["module:analytics", "analytics:read"]
_TRAINER = ["learning:manage"]  # with _AGENT's module:learning
_AUTHOR = [*_AGENT, "knowledge:create", "knowledge:edit", "knowledge:submit"]
_REVIEWER = [*_AUTHOR, "knowledge:review"]
_PUBLISHER = [
    *_REVIEWER,
    "knowledge:publish",
    "knowledge:archive",
    "feedback:manage",
    "knowledge:owners",
    "announcements:manage",
    "experts:manage",
]

# Roles created by the first migration's seed and by `kb init`; admins may change them.
DEFAULT_ROLES: dict[str, tuple[str, list[str]]] = {
    "admin": ("系统管理员 / administrator", [ALL]),
    "agent": ("坐席 / agent: reads and searches", _AGENT),
    "author": ("知识编辑 / author: writes drafts", _AUTHOR),
    "reviewer": ("审核员 / reviewer", _REVIEWER),
    "publisher": ("发布员 / publisher", _PUBLISHER),
    "kb_manager": (
        "知识管理员 / knowledge manager",
        [
            *_PUBLISHER,
            "knowledge:import",
            "knowledge:acl",
            "taxonomy:manage",
            "search:manage",
            "channels:manage",
            "study:manage",
            *_ANALYST,
            *_TRAINER,
        ],
    ),
    "supervisor": (
        "班组长 / supervisor: reads and searches, sees the analytics, approves cases, runs training and exams",
        [*_AGENT, *_ANALYST, *_TRAINER, "knowledge:approve_case", "study:manage"],
    ),
    "auditor": ("审计员 / auditor", [SYSTEM_ACCESS, "module:admin", "audit:read", "jobs:manage"]),
}
