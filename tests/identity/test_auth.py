from __future__ import annotations

import time
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from jose import jwt

from app.core.config import Settings
from app.main import create_app
from tests.conftest import PASSWORD, Actor, People, assert_problem


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token", data={"grant_type": "password", "username": username, "password": password}
    )


async def test_password_grant_gives_tokens_that_work(client: httpx.AsyncClient, people: People) -> None:
    await people.make("zhang.wei", role="agent")
    r = await login(client, "zhang.wei")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0 and body["refresh_token"]
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["name"] == "zhang.wei" and "knowledge:read" in me.json()["permissions"]


async def test_wrong_password_and_unknown_user_look_the_same(client: httpx.AsyncClient, people: People) -> None:
    await people.make("li.na", role="author")
    a = assert_problem(await login(client, "li.na", "wrong-password"), 401, "invalid_grant")
    b = assert_problem(await login(client, "nobody", "wrong-password"), 401, "invalid_grant")
    assert a["detail"] == b["detail"]


async def test_repeated_failures_are_rate_limited(
    app: Any, client: httpx.AsyncClient, people: People, settings: Settings, admin: Actor
) -> None:
    await people.make("wang.fang", role="agent")
    for _ in range(5):
        assert (await login(client, "wang.fang", "bad-password")).status_code == 401
    r = await login(client, "wang.fang")  # even the right password waits now
    assert_problem(r, 429, "rate_limited")
    assert r.headers["retry-after"] == str(settings.login_window_seconds)
    # the count is kept in the database: another API process (another app) refuses too
    other = create_app(settings)
    async with (
        LifespanManager(other),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://testserver") as elsewhere,
    ):
        assert_problem(await login(elsewhere, "wang.fang"), 429, "rate_limited")
    # but not for another address, nor for another name from this one
    other_address = httpx.ASGITransport(app=app, client=("10.8.0.21", 50000))
    async with httpx.AsyncClient(transport=other_address, base_url="http://testserver") as colleague:
        assert (await login(colleague, "wang.fang")).status_code == 200
    assert (await login(client, "admin")).status_code == 200
    # each failure is audited, with the name and the address it came from
    r = await client.get("/api/v1/audit", params={"action": "auth.signin_failed"}, headers=admin.headers)
    entries = r.json()["items"]
    assert len(entries) == 5 and {e["outcome"] for e in entries} == {"denied"}
    assert {(e["summary"]["name"], e["summary"]["address"], e["summary"]["code"]) for e in entries} == {
        ("wang.fang", "127.0.0.1", "invalid_grant")
    }


async def test_refresh_token_is_single_use(client: httpx.AsyncClient, people: People) -> None:
    await people.make("chen.jie", role="publisher")
    first = (await login(client, "chen.jie")).json()
    r = await client.post(
        "/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["access_token"] != first["access_token"]
    again = await client.post(
        "/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert_problem(again, 401, "token_revoked")


async def test_revoke_signs_out(client: httpx.AsyncClient, people: People) -> None:
    await people.make("zhao.lei", role="agent")
    tokens = (await login(client, "zhao.lei")).json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    r = await client.post("/api/v1/auth/revoke", data={"refresh_token": tokens["refresh_token"]}, headers=auth)
    assert r.status_code == 204
    r = await client.post(
        "/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert_problem(r, 401, "token_revoked")


async def test_disabled_users_old_tokens_stop_working(client: httpx.AsyncClient, people: People, admin: Any) -> None:
    agent = await people.make("sun.li", role="agent")
    tokens = (await login(client, "sun.li")).json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=auth)).status_code == 200
    r = await client.patch(f"/api/v1/users/{agent.user.id}", json={"is_active": False}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert_problem(await client.get("/api/v1/auth/me", headers=auth), 401, "token_revoked")
    r = await client.post(
        "/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert_problem(r, 401, "token_revoked")
    assert_problem(await login(client, "sun.li"), 401, "user_disabled")


async def test_password_change_revokes_tokens(client: httpx.AsyncClient, people: People, admin: Any) -> None:
    agent = await people.make("zhou.min", role="agent")
    r = await client.patch(f"/api/v1/users/{agent.user.id}", json={"password": "NewPassw0rd!"}, headers=admin.headers)
    assert r.status_code == 200
    assert_problem(await client.get("/api/v1/auth/me", headers=agent.headers), 401, "token_revoked")
    assert (await login(client, "zhou.min", "NewPassw0rd!")).status_code == 200


async def test_bad_tokens(client: httpx.AsyncClient, people: People, app: Any) -> None:
    actor = await people.make("qian.bo", role="agent")
    good = actor.headers["Authorization"].split()[1]
    header, payload, sig = good.split(".")
    tampered = f"{header}.{payload}.{sig[:-4]}AAAA"
    for token in ("not-a-jwt", tampered, good[:-1]):
        assert_problem(
            await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}), 401, "invalid_token"
        )
    assert_problem(await client.get("/api/v1/auth/me", headers={"Authorization": "Basic abc"}), 401)
    codec = app.state.token_codec
    expired = jwt.encode(
        {"sub": f"user:{actor.user.id}", "typ": "access", "ver": 1, "exp": int(time.time()) - 10},
        "test-secret-" + "x" * 40,
        algorithm="HS256",
    )
    assert_problem(
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"}), 401, "token_expired"
    )
    other_key = jwt.encode(
        {"sub": f"user:{actor.user.id}", "typ": "access", "ver": 1, "exp": int(time.time()) + 100},
        "another-secret",
        algorithm="HS256",
    )
    assert_problem(
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {other_key}"}), 401, "invalid_token"
    )
    refresh, _ = codec.encode({"sub": f"user:{actor.user.id}", "typ": "refresh", "ver": 1}, codec.refresh_ttl)
    assert_problem(
        await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {refresh}"}), 401, "invalid_token"
    )
    assert_problem(await client.get("/api/v1/auth/me"), 401, "unauthenticated")


async def test_client_credentials_and_scopes(client: httpx.AsyncClient, admin: Any) -> None:
    r = await client.post(
        "/api/v1/clients",
        headers=admin.headers,
        json={
            "client_id": "wechat-bot",
            "name": "微信公众号",
            "scopes": ["knowledge:read", "search:query"],
            "channel": "wechat",
        },
    )
    assert r.status_code == 201, r.text
    secret = r.json()["client_secret"]
    cid = r.json()["id"]
    tok = await client.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "wechat-bot",
            "client_secret": secret,
            "scope": "search:query",
        },
    )
    assert tok.status_code == 200, tok.text
    assert tok.json()["scope"] == "search:query" and "refresh_token" not in tok.json()
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {tok.json()['access_token']}"})
    assert me.json()["permissions"] == ["search:query"] and me.json()["channel"] == "wechat"
    # a scope the client was never granted
    r = await client.post(
        "/api/v1/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "wechat-bot",
            "client_secret": secret,
            "scope": "knowledge:publish",
        },
    )
    assert_problem(r, 422, "invalid_scope")
    # a client using a scope it lacks on an admin endpoint
    auth = {"Authorization": f"Bearer {tok.json()['access_token']}"}
    assert_problem(await client.get("/api/v1/users", headers=auth), 403, "permission_denied")
    # wrong secret; disabled client loses its tokens
    r = await client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": "wechat-bot", "client_secret": "nope"},
    )
    assert_problem(r, 401, "invalid_client")
    await client.patch(f"/api/v1/clients/{cid}", headers=admin.headers, json={"is_active": False})
    assert_problem(await client.get("/api/v1/auth/me", headers=auth), 401, "token_revoked")


async def test_rotate_secret_invalidates_old_secret(client: httpx.AsyncClient, admin: Any) -> None:
    r = await client.post(
        "/api/v1/clients",
        headers=admin.headers,
        json={"client_id": "crm-sync", "name": "CRM 同步", "scopes": ["knowledge:import"]},
    )
    old = r.json()["client_secret"]
    r2 = await client.post(f"/api/v1/clients/{r.json()['id']}/rotate-secret", headers=admin.headers)
    new = r2.json()["client_secret"]
    assert new != old
    bad = await client.post(
        "/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": "crm-sync", "client_secret": old}
    )
    assert_problem(bad, 401, "invalid_client")
    ok = await client.post(
        "/api/v1/auth/token", data={"grant_type": "client_credentials", "client_id": "crm-sync", "client_secret": new}
    )
    assert ok.status_code == 200


async def test_token_endpoint_bad_input(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/api/v1/auth/token", data={"grant_type": "magic"}), 422, "validation_error")
    assert_problem(await client.post("/api/v1/auth/token", data={"grant_type": "password"}), 422, "invalid_request")
    assert_problem(
        await client.post("/api/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": "x.y.z"}),
        401,
        "invalid_token",
    )


async def test_rs256_tokens(settings: Any, tmp_path: Any) -> None:
    """RS256 is configuration only: sign with the private key file, verify with the public one."""
    from asgi_lifespan import LifespanManager
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from app.main import create_app

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "jwt.pem"
    public = tmp_path / "jwt.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    rs = settings.model_copy(
        update={
            "jwt_algorithm": "RS256",
            "jwt_private_key_file": private,
            "jwt_public_key_file": public,
            "data_dir": tmp_path / "rs",
            "bootstrap_admin_user": "rs.admin",
            "bootstrap_admin_password": "Passw0rd!rs",
        }
    )
    application = create_app(rs)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post(
                "/api/v1/auth/token", data={"grant_type": "password", "username": "rs.admin", "password": "Passw0rd!rs"}
            )
            assert r.status_code == 200, r.text
            token = r.json()["access_token"]
            assert jwt.get_unverified_header(token)["alg"] == "RS256"
            assert (await c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200
            forged = jwt.encode(jwt.get_unverified_claims(token), "guess", algorithm="HS256")
            assert_problem(
                await c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {forged}"}), 401, "invalid_token"
            )
