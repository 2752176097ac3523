"""The security regression matrix, beside the permission walk of test_permission_matrix.py: forged and
spent tokens, one department reading another's item (BOLA) on every surface, mass assignment,
hostile uploads and hostile JSON. Each case pairs the refusal with the same request succeeding for
the rightful caller, so removing the protection turns it red."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt
from sqlalchemy import func, select, update

from app.identity.models import Role, User
from app.knowledge.models import Item
from tests.attachments.api_helpers import (
    CTYPE,
    blob_files,
    counts,
    create_item,
    drain,
    etag,
    exe_bytes,
    multipart,
    publish,
    temp_files,
    upload,
    upload_ok,
)
from tests.conftest import PASSWORD, Actor, People, assert_problem

SECRET = "test-secret-" + "x" * 40  # the test settings' signing key

# ---------------------------------------------------------------- token tampering


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.get_unverified_claims(token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_forged_and_altered_tokens_are_refused(client: httpx.AsyncClient, people: People, admin: Actor) -> None:
    agent = await people.make("kefu.zhang", role="agent")
    token = agent.headers["Authorization"].split()[1]
    header, _, signature = token.split(".")
    assert (await client.get("/api/v1/auth/me", headers=agent.headers)).status_code == 200
    assert (await client.get("/api/v1/users", headers=admin.headers)).status_code == 200
    as_admin = {**claims_of(token), "sub": f"user:{admin.user.id}", "ver": admin.user.token_version}
    forged = {
        # unsigned: alg none, with and without a signature part
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(as_admin)}.",
        "alg None + old signature": f"{b64({'alg': 'None', 'typ': 'JWT'})}.{b64(as_admin)}.{signature}",
        # another algorithm than the service's one
        "alg HS512": jwt.encode(as_admin, SECRET, algorithm="HS512"),
        # signed with a key that is not the service's
        "wrong key": jwt.encode(as_admin, "风控部的另一把钥匙" + "k" * 40, algorithm="HS256"),
        # the agent's own signature over a payload changed to the administrator
        "sub changed": f"{header}.{b64(as_admin)}.{signature}",
        "typ changed": f"{header}.{b64({**claims_of(token), 'typ': 'refresh'})}.{signature}",
    }
    for name, bad in forged.items():
        r = await client.get("/api/v1/users", headers=bearer(bad))
        assert r.status_code == 401, name
        assert_problem(r, 401, "invalid_token")
    expired = jwt.encode({**as_admin, "exp": int(time.time()) - 5}, SECRET, algorithm="HS256")
    assert_problem(await client.get("/api/v1/users", headers=bearer(expired)), 401, "token_expired")
    # the same claims, correctly signed and current, do work: the refusals above are the checks
    good = jwt.encode({**as_admin, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert (await client.get("/api/v1/users", headers=bearer(good))).status_code == 200


async def test_a_clients_scopes_cannot_be_widened_in_its_token(client: httpx.AsyncClient, admin: Actor) -> None:
    r = await client.post(
        "/api/v1/clients",
        headers=admin.headers,
        json={
            "client_id": "wechat-kefu",
            "name": "微信客服",
            "scopes": ["knowledge:read", "search:query"],
            "channel": "wechat",
        },
    )
    assert r.status_code == 201, r.text
    tok = (
        await client.post(
            "/api/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "wechat-kefu",
                "client_secret": r.json()["client_secret"],
            },
        )
    ).json()["access_token"]
    assert (await client.get("/api/v1/search", params={"q": "挂失"}, headers=bearer(tok))).status_code == 200
    header, _, signature = tok.split(".")
    wider = {**claims_of(tok), "scope": "knowledge:read search:query identity:manage"}
    assert_problem(
        await client.get("/api/v1/users", headers=bearer(f"{header}.{b64(wider)}.{signature}")), 401, "invalid_token"
    )
    # even a validly signed token cannot hold more than the client was given
    resigned = jwt.encode(wider, SECRET, algorithm="HS256")
    assert_problem(await client.get("/api/v1/users", headers=bearer(resigned)), 403, "permission_denied")


async def test_a_disabled_users_token_stops_at_once(client: httpx.AsyncClient, people: People, app: Any) -> None:
    """Even when the account is switched off in the database directly (no token version bump)."""
    agent = await people.make("kefu.sun", role="agent")
    assert (await client.get("/api/v1/auth/me", headers=agent.headers)).status_code == 200
    async with app.state.sessionmaker() as s:
        await s.execute(update(User).where(User.id == agent.user.id).values(is_active=False))
        await s.commit()
    assert_problem(await client.get("/api/v1/auth/me", headers=agent.headers), 401, "token_revoked")


async def test_a_refresh_token_is_spent_once_even_when_raced(client: httpx.AsyncClient, people: People) -> None:
    await people.make("kefu.zhou", role="agent")
    tokens = (
        await client.post(
            "/api/v1/auth/token", data={"grant_type": "password", "username": "kefu.zhou", "password": PASSWORD}
        )
    ).json()

    async def refresh() -> httpx.Response:
        return await client.post(
            "/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )

    answers = await asyncio.gather(*(refresh() for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [200] + [401] * 5, [r.text for r in answers]
    for r in answers:
        if r.status_code == 401:
            assert_problem(r, 401, "token_revoked")
    assert_problem(await refresh(), 401, "token_revoked")


# ---------------------------------------------------------------- BOLA across departments

SECRET_TITLE = "内部：信用卡风控审批口径"
SECRET_BODY = "<p>征信评分低于六百分的申请一律转人工复核，额度上限按月收入三倍核定。</p>"
SECRET_FILE_TEXT = "风控黑名单命中规则：同一设备号七日内申请超过三次即冻结授信。"
# words only the restricted item holds (query words may be echoed back; these never are)
SECRET_WORDS = ("风控审批口径", "征信评分", "六百分", "月收入三倍", "黑名单命中", "冻结授信", "风控复核")


async def departments(client: httpx.AsyncClient, admin: Actor, *names: str) -> list[int]:
    out = []
    for name in names:
        r = await client.post("/api/v1/departments", headers=admin.headers, json={"name": name})
        assert r.status_code == 201, r.text
        out.append(r.json()["id"])
    return out


async def test_another_departments_item_does_not_exist_on_any_surface(
    client: httpx.AsyncClient, app: Any, admin: Actor, people: People
) -> None:
    h = admin.headers
    risk, service_desk = await departments(client, admin, "风控部", "客服部")
    # publishers of both departments: every workflow permission, no superuser bypass (ACL managers,
    # knowledge:acl, reach every item by design: they are the ones who set the grants)
    insider = await people.make("risk.publisher", role="publisher", department_id=risk)
    outsider = await people.make("kefu.publisher", role="publisher", department_id=service_desk)
    item = await create_item(
        client,
        h,
        title=SECRET_TITLE,
        body=SECRET_BODY,
        question="风控复核的标准是什么",
        tags=["风控复核"],
        visibility="internal",
    )
    iid = item["id"]
    r = await client.put(
        f"/api/v1/items/{iid}/acl",
        headers=h,
        json={"grants": [{"subject": f"dept:{risk}", "access": "read"}, {"subject": f"dept:{risk}", "access": "edit"}]},
    )
    assert r.status_code == 200, r.text
    att = (await upload_ok(client, h, iid, [("风控规则.txt", SECRET_FILE_TEXT.encode())]))["attachments"][0]
    await publish(client, h, iid, 1)
    draft = await client.patch(
        f"/api/v1/items/{iid}/draft",
        headers={**h, "If-Match": await etag(client, h, iid)},
        json={"body": SECRET_BODY + "<p>第二版：风控复核改为双人。</p>"},
    )
    assert draft.status_code == 200, draft.text
    # a public item both may see, so the searches below have something to return
    other = await create_item(
        client,
        h,
        title="信用卡挂失流程",
        body="<p>信用卡丢失请立即致电95588挂失，审批后补卡。</p>",
        visibility="internal",
    )
    await publish(client, h, other["id"], 1)
    await drain(app)

    reads = [
        f"/api/v1/items/{iid}",
        f"/api/v1/items/{iid}/versions",
        f"/api/v1/items/{iid}/versions/1",
        f"/api/v1/items/{iid}/versions/2",
        f"/api/v1/items/{iid}/diff?from=1&to=2",
        f"/api/v1/items/{iid}/draft",
        f"/api/v1/items/{iid}/attachments",
    ]
    for url in reads:
        assert (await client.get(url, headers=insider.headers)).status_code == 200, url
        r = await client.get(url, headers=outsider.headers)
        assert r.status_code == 404, url
        assert_problem(r, 404, "item_not_found")
    for sub in ("", "/text", "/content", "/preview"):
        url = f"/api/v1/attachments/{att['id']}{sub}"
        assert (await client.get(url, headers=insider.headers)).status_code == 200, url
        assert_problem(await client.get(url, headers=outsider.headers), 404, "attachment_not_found")

    # writes: every workflow action, the draft, the item, its ACL and attachments
    tag = await etag(client, insider.headers, iid)
    writes: list[tuple[str, str, Any]] = [
        ("PATCH", f"/api/v1/items/{iid}", {"visibility": "public"}),
        ("PATCH", f"/api/v1/items/{iid}/draft", {"title": "客服部改的标题"}),
        ("DELETE", f"/api/v1/items/{iid}/draft", None),
        ("DELETE", f"/api/v1/items/{iid}", None),
        ("DELETE", f"/api/v1/items/{iid}/attachments/{att['id']}", None),
        ("POST", f"/api/v1/items/{iid}/versions/1/restore", None),
    ]
    writes += [
        ("POST", f"/api/v1/items/{iid}/versions/{n}/{a}", {"reason": "客服部驳回"} if a == "reject" else None)
        for n, a in [
            (2, "submit"),
            (2, "withdraw"),
            (2, "approve"),
            (2, "reject"),
            (2, "reopen"),
            (2, "publish"),
            (1, "unpublish"),
            (1, "archive"),
        ]
    ]
    for method, url, body in writes:
        r = await client.request(method, url, json=body, headers={**outsider.headers, "If-Match": tag})
        assert r.status_code == 404, (method, url, r.text)
        assert_problem(r, 404, "item_not_found")
    r = await upload(client, outsider.headers, iid, [("客服部.txt", b"x")], extra_headers={"If-Match": tag})
    assert_problem(r, 404, "item_not_found")
    assert await etag(client, insider.headers, iid) == tag  # nothing above changed the item
    assert (
        await client.post(f"/api/v1/items/{iid}/versions/2/submit", headers={**insider.headers, "If-Match": tag})
    ).status_code == 200  # the same action is open to the rightful department

    # search: hits, totals, facets, suggestions, highlights, the explain output
    listed = await client.get("/api/v1/items", params={"limit": 100}, headers=outsider.headers)
    assert iid not in {i["id"] for i in listed.json()["items"]}
    found = await client.get("/api/v1/search", params={"q": "风控复核", "explain": True}, headers=insider.headers)
    assert iid in {hit["item_id"] for hit in found.json()["items"]}
    assert any(w in found.text for w in SECRET_WORDS)  # the words below are really in the index
    for params in (
        {"q": "风控复核"},
        {"q": "征信评分 额度"},
        {"q": "冻结授信"},
        {"q": "信用卡 审批", "explain": True},
        {"q": ""},
        {"q": "", "tag": "风控复核"},
        {"q": "审批", "status": "archived"},
    ):
        r = await client.get("/api/v1/search", params=params, headers=outsider.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert iid not in {hit["item_id"] for hit in body["items"]}, params
        assert body["total"] == len(body["items"]) <= 1, params
        shown = r.text.replace(json.dumps(params["q"], ensure_ascii=False).strip('"'), "")
        assert not [w for w in SECRET_WORDS if w in shown and w not in params.get("q", "")], (params, r.text)
        for values in body["facets"].values():
            assert all(f["value"] != "风控复核" for f in values), params
    for q in ("风控", "信用卡", "fengkong", "xyk"):
        r = await client.get("/api/v1/search/suggest", params={"q": q}, headers=outsider.headers)
        assert r.status_code == 200 and all(s["item_id"] != iid for s in r.json()), (q, r.text)
        assert "风控审批口径" not in r.text


# ---------------------------------------------------------------- mass assignment


async def test_nobody_grants_themselves_roles_or_departments(
    client: httpx.AsyncClient, admin: Actor, people: People, app: Any
) -> None:
    risk, _ = await departments(client, admin, "风控部", "客服部")
    roles = await people.roles()
    agent = await people.make("kefu.wang", role="agent")
    # an agent has no profile endpoint that writes: /auth/me is read only, /users/{own id} needs identity:manage
    assert_problem(
        await client.patch("/api/v1/auth/me", headers=agent.headers, json={"role_ids": [roles["admin"].id]}),
        405,
        "method_not_allowed",
    )
    for body in ({"role_ids": [roles["admin"].id]}, {"department_id": risk}):
        r = await client.patch(f"/api/v1/users/{agent.user.id}", headers=agent.headers, json=body)
        assert_problem(r, 403, "permission_denied")
    # a user manager (identity:manage, not `*`) cannot mint an administrator, by any route
    manager = await people.make("hr.li", permissions=["system:access", "module:admin", "identity:manage"])
    me = f"/api/v1/users/{manager.user.id}"
    assert_problem(
        await client.patch(me, headers=manager.headers, json={"role_ids": [roles["admin"].id]}),
        403,
        "cannot_change_own_access",
    )
    assert_problem(
        await client.patch(me, headers=manager.headers, json={"department_id": risk}), 403, "cannot_change_own_access"
    )
    r = await client.patch(
        f"/api/v1/users/{agent.user.id}", headers=manager.headers, json={"role_ids": [roles["admin"].id]}
    )
    assert assert_problem(r, 403, "permission_escalation")["permissions"] == ["*"]
    r = await client.post(
        "/api/v1/users",
        headers=manager.headers,
        json={"username": "shadow.admin", "password": "Passw0rd!影子", "role_ids": [roles["kb_manager"].id]},
    )
    assert_problem(r, 403, "permission_escalation")
    r = await client.post("/api/v1/roles", headers=manager.headers, json={"name": "shadow", "permissions": ["*"]})
    assert_problem(r, 403, "permission_escalation")
    own_role = next(r.id for r in manager.user.roles)
    r = await client.patch(
        f"/api/v1/roles/{own_role}",
        headers=manager.headers,
        json={"permissions": ["system:access", "module:admin", "identity:manage", "audit:read"]},
    )
    assert_problem(r, 403, "permission_escalation")
    r = await client.post(
        "/api/v1/clients",
        headers=manager.headers,
        json={"client_id": "shadow-sync", "name": "影子同步", "scopes": ["knowledge:publish"]},
    )
    assert_problem(r, 403, "permission_escalation")
    # what they hold they may hand out, and other people's departments they may change
    r = await client.patch(f"/api/v1/users/{agent.user.id}", headers=manager.headers, json={"department_id": risk})
    assert r.status_code == 200, r.text
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(User)) == 3
        assert await s.scalar(select(func.count()).select_from(Role).where(Role.name == "shadow")) == 0
        mine = await s.get(User, manager.user.id)
        assert mine is not None and mine.department_id is None
    # an administrator may still change anyone else's roles
    r = await client.patch(
        f"/api/v1/users/{manager.user.id}", headers=admin.headers, json={"role_ids": [roles["admin"].id]}
    )
    assert r.status_code == 200, r.text


async def test_an_item_cannot_be_created_published_nor_its_author_spoofed(
    client: httpx.AsyncClient, app: Any, people: People, admin: Actor
) -> None:
    author = await people.make("li.na", role="author")
    base = {"title": "信用卡年费减免政策", "body": "<p>金卡首年免年费，刷卡满六次免次年年费。</p>"}
    for extra in (
        {"status": "published"},
        {"state": "published"},
        {"published_version_no": 1},
        {"created_by": admin.user.id},
        {"author_id": admin.user.id},
        {"id": 1},
        {"row_version": 9},
    ):
        r = await client.post("/api/v1/items", headers=author.headers, json={**base, **extra})
        body = assert_problem(r, 422, "validation_error")
        assert [e["field"] for e in body["errors"]] == [f"body.{next(iter(extra))}"], body
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Item)) == 0
    item = await create_item(client, author.headers, **base)
    assert (item["status"], item["version"]["state"]) == ("draft", "draft")
    assert item["created_by"] == author.user.id and item["version"]["author_id"] == author.user.id
    r = await client.patch(
        f"/api/v1/items/{item['id']}/draft",
        json={"state": "approved", "author_id": admin.user.id},
        headers={**author.headers, "If-Match": item["etag"]},
    )
    assert {e["field"] for e in assert_problem(r, 422, "validation_error")["errors"]} == {
        "body.state",
        "body.author_id",
    }
    r = await client.patch(
        f"/api/v1/items/{item['id']}", json={"status": "published"}, headers={**admin.headers, "If-Match": item["etag"]}
    )
    assert_problem(r, 422, "validation_error")


# ---------------------------------------------------------------- hostile uploads


async def test_hostile_upload_names_stay_inside_the_blob_store(
    client: httpx.AsyncClient, app: Any, admin: Actor, tmp_path: Path
) -> None:
    h = admin.headers
    item = await create_item(client, h, title="风控规则附件")
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    names = [
        "../../../../tmp/风控.txt",
        "/etc/cron.d/kb",
        "..\\..\\windows\\system32\\drivers\\etc\\hosts",
        "C:\\风控部\\规则.txt",
        "....//....//逃逸.txt",
    ]
    up = await upload_ok(client, h, item["id"], [(n, f"内容{i}".encode()) for i, n in enumerate(names)])
    stored = [a["file_name"] for a in up["attachments"]]
    assert stored == ["风控.txt", "kb", "hosts", "规则.txt", "逃逸.txt"]
    assert all("/" not in n and "\\" not in n and ".." not in n for n in stored)
    root = Path(app.state.services["blobs"].root).resolve()
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    blobs = set(blob_files(app))
    assert len(blobs) == len(names) and all(p.resolve().is_relative_to(root) for p in blobs)
    assert {p for p in written if not p.resolve().is_relative_to(root)} <= {
        p for p in written if p.suffix in {".sqlite3", ".sqlite3-wal", ".sqlite3-shm"} or "index" in p.parts
    }
    assert not Path("/etc/cron.d/kb").exists()
    for a in up["attachments"]:
        r = await client.get(f"/api/v1/attachments/{a['id']}/content", headers=h)
        disposition = r.headers["content-disposition"]
        assert disposition.startswith("attachment;") and not any(c in disposition for c in ("/", "\\", ".."))


async def test_an_exe_named_pdf_is_what_it_is(client: httpx.AsyncClient, app: Any, admin: Actor) -> None:
    h = admin.headers
    item = await create_item(client, h, title="信用卡对账单")
    exe = exe_bytes()
    r = await client.post(
        f"/api/v1/items/{item['id']}/attachments",
        content=multipart([("对账单.pdf", exe)], content_type="application/pdf"),
        headers={**h, "Content-Type": CTYPE},
    )
    assert r.status_code == 201, r.text
    att = r.json()["attachments"][0]
    assert att["mime"] == "application/x-msdownload"
    await drain(app)
    r = await client.get(f"/api/v1/attachments/{att['id']}/content", headers=h)
    assert r.content == exe and r.headers["content-type"] == "application/x-msdownload"
    assert (
        r.headers["content-disposition"].startswith("attachment;") and r.headers["x-content-type-options"] == "nosniff"
    )
    assert_problem(await client.get(f"/api/v1/attachments/{att['id']}/preview", headers=h), 415, "no_preview")


async def test_an_oversized_upload_is_413_and_leaves_nothing(client: httpx.AsyncClient, app: Any, admin: Actor) -> None:
    h = admin.headers
    item = await create_item(client, h, title="风控培训录像")
    app.state.settings.max_upload_file_bytes = 200_000
    r = await upload(client, h, item["id"], [("小.txt", b"ok"), ("录像.mp4", b"\x00" * 200_001)])
    assert_problem(r, 413, "file_too_large")
    assert blob_files(app) == [] and temp_files(app) == []
    assert await counts(app) == {"blobs": 0, "blob_texts": 0, "attachments": 0, "links": 0, "extract_jobs": 0}


# ---------------------------------------------------------------- hostile JSON and headers


@pytest.mark.parametrize(
    "body, code",
    [
        ('{"name": "风控部"}'.encode("gbk"), "malformed_json"),
        ('{"name": "風控部"}'.encode("big5"), "malformed_json"),
        (b'{"name": "\xff\xfe\xfd"}', "malformed_json"),
        (("[" * 10_000 + "]" * 10_000).encode(), "malformed_json"),
        (('{"name": ' + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}").encode(), "malformed_json"),
        (b'{"name": "\\u98ce\\u63a7\\u0000\\u90e8"}', "validation_error"),
        ('{"name": "风控\x00部"}'.encode(), "malformed_json"),
    ],
)
async def test_hostile_json_is_a_stable_4xx(client: httpx.AsyncClient, admin: Actor, body: bytes, code: str) -> None:
    r = await client.post(
        "/api/v1/departments", content=body, headers={**admin.headers, "content-type": "application/json"}
    )
    problem = assert_problem(r, 400 if code == "malformed_json" else 422, code)
    assert "Traceback" not in r.text and len(r.content) < 20_000, problem
    listed = await client.get("/api/v1/departments", headers=admin.headers)
    assert listed.json() == [] or listed.json()["items"] == []


async def test_nul_in_item_fields_is_refused(client: httpx.AsyncClient, admin: Actor, app: Any) -> None:
    for field, value in (
        ("title", "信用卡\x00风控"),
        ("body", "<p>额度\x00审批</p>"),
        ("tags", ["风控\x00"]),
        ("similar_questions", ["怎么\x00提额"]),
        ("question", "提额\u0000"),
    ):
        r = await client.post("/api/v1/items", headers=admin.headers, json={"title": "信用卡提额", field: value})
        body = assert_problem(r, 422, "validation_error")
        assert any(e["field"].startswith(f"body.{field}") for e in body["errors"]), body
    async with app.state.sessionmaker() as s:
        assert await s.scalar(select(func.count()).select_from(Item)) == 0


async def test_absurd_headers_are_a_4xx(client: httpx.AsyncClient, admin: Actor) -> None:
    huge = "Bearer " + "A" * 200_000
    assert_problem(await client.get("/api/v1/auth/me", headers={"Authorization": huge}), 401, "invalid_token")
    r = await client.get("/api/v1/items", headers={**admin.headers, "If-None-Match": '"' + "x" * 100_000 + '"'})
    assert r.status_code == 200
    r = await client.get("/api/v1/items", headers={**admin.headers, "X-Request-Id": "kefu-" * 20_000})
    assert r.status_code == 200 and len(r.headers.get("x-request-id", "")) <= 200
    r = await client.get("/api/v1/items", headers={**admin.headers, "Accept-Language": "zh-CN," * 20_000})
    assert r.status_code == 200


async def test_nul_in_query_strings_paths_and_form_fields_is_a_4xx(
    client: httpx.AsyncClient, admin: Actor, app: Any
) -> None:
    """PostgreSQL text cannot hold NUL: without these checks each request below is a 500 there."""
    h = admin.headers
    for url in (
        "/api/v1/users?q=li%00na",
        "/api/v1/items?q=%E9%A3%8E%E6%8E%A7%00",
        "/api/v1/search?q=%E9%A3%8E%00",
        "/api/v1/search/suggest?q=%00",
        "/api/v1/audit?action=%00",
        "/api/v1/search?q=x&tag=%00",
        "/api/v1/item-types/faq%00",
    ):
        assert_problem(await client.get(url, headers=h), 400, "nul_character")
    assert (await client.get("/api/v1/users?q=li", headers=h)).status_code == 200
    for data in (
        {"grant_type": "password", "username": "li\x00na", "password": "x"},
        {"grant_type": "client_credentials", "client_id": "wechat\x00", "client_secret": "x"},
        {"grant_type": "refresh_token", "refresh_token": "a\x00b"},
    ):
        body = assert_problem(await client.post("/api/v1/auth/token", data=data), 422, "validation_error")
        assert body["errors"][0]["field"] in {"body.username", "body.client_id", "body.refresh_token"}
