"""`kb backup` / `kb restore` as real processes against the embedded default (SQLite), while the app
keeps writing: the restore equals the snapshot row for row, every blob hashes to its name, and a
Chinese query finds the items in the rebuilt index."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.main import create_app
from tests.attachments.api_helpers import etag, upload_ok
from tests.conftest import Actor
from tests.search.test_search_api import ids, publish, search

# Every row a user relies on; audit_log and jobs are left out of the comparison only because the
# concurrent writer keeps adding to them (they are in the snapshot all the same).
TABLES = {
    "items": "id",
    "item_versions": "id",
    "acl_grants": "id",
    "attachments": "id",
    "version_attachments": "version_id, attachment_id",
    "blobs": "sha256",
    "search_dictionary": "id",
    "search_synonyms": "id",
    "users": "id",
    "roles": "id",
}


def rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {key}").fetchall() for t, key in TABLES.items()}
    finally:
        conn.close()


def column(db: Path, sql: str) -> set[Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute(sql)}
    finally:
        conn.close()


def blob_hashes(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and ".tmp" not in p.parts
    }


async def kb(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def env_for(settings: Settings, data: Path | None = None, url: str | None = None) -> dict[str, str]:
    data = data or settings.data_dir
    return {
        "KB_ENV": "test",
        "KB_DATA_DIR": str(data),
        "KB_DATABASE_URL": url or f"sqlite+aiosqlite:///{data}/kb.sqlite3",
        "KB_JWT_SECRET": settings.jwt_secret,
        "KB_LOG_LEVEL": "WARNING",
    }


@pytest.fixture
def sqlite_only(settings: Settings) -> None:
    if not settings.is_sqlite:
        pytest.skip(
            "kb backup covers SQLite (PostgreSQL is backed up with pg_dump, README): this runs in the "
            "SQLite leg of every run"
        )


async def make_content(client: httpx.AsyncClient, admin: Actor) -> list[int]:
    h = admin.headers
    r = await client.post("/api/v1/search/dictionary", headers=h, json={"words": ["携号转网", "光猫", "副卡"]})
    assert r.status_code in (200, 201), r.text
    r = await client.post("/api/v1/search/synonyms", headers=h, json={"terms": ["调制解调器", "光猫"]})
    assert r.status_code == 201, r.text
    first = await publish(client, h, title="携号转网办理条件", body="<p>在网满120天、無欠費即可辦理携号转网。</p>")
    second = await publish(
        client, h, title="光猫LOS红灯闪烁处理", body="<p>检查尾纤是否松动，重启光猫后观察5分钟。</p>"
    )
    third = await publish(client, h, title="信用卡副卡申请", body="<p>主卡持卡人可为家属申请副卡，年费首年免收。</p>")
    # a second version (a draft beside the published one) and an ACL grant
    r = await client.patch(
        f"/api/v1/items/{first}/draft",
        headers={**h, "If-Match": await etag(client, h, first)},
        json={"body": "<p>在网满120天且无欠费；合约期内需先解约。</p>", "change_note": "补充合约说明"},
    )
    assert r.status_code in (200, 201), r.text
    r = await client.put(
        f"/api/v1/items/{third}/acl",
        headers={**h, "If-Match": await etag(client, h, third)},
        json={"grants": [{"subject": "internal", "access": "read"}]},
    )
    assert r.status_code == 200, r.text
    await upload_ok(client, h, second, [("光猫指示灯说明.txt", "LOS红灯：光纤信号中断。PON灯：注册状态。".encode())])
    await upload_ok(
        client, h, third, [("副卡申请表.csv", "姓名,证件号码,关系\n王小明,110101199001011234,配偶\n".encode())]
    )
    return [first, second, third]


async def test_backup_while_writing_restores_an_identical_searchable_instance(
    sqlite_only: None, client: httpx.AsyncClient, admin: Actor, settings: Settings, tmp_path: Path
) -> None:
    items = await make_content(client, admin)
    live_db = Path(settings.database_url.split(":///", 1)[1])
    before = rows(live_db)
    before_blobs = column(live_db, "SELECT sha256 FROM blobs")
    backup_dir, restored = tmp_path / "backup", tmp_path / "restored"

    written: list[int] = []
    stop = asyncio.Event()

    async def keep_writing() -> None:  # the service goes on serving: creates and uploads during the backup
        n = 0
        while not stop.is_set():
            n += 1
            r = await client.post(
                "/api/v1/items",
                headers=admin.headers,
                json={"title": f"停电报修工单{n}号", "body": f"<p>片区{n}计划检修。</p>"},
            )
            assert r.status_code == 201, r.text
            written.append(r.json()["id"])
            await upload_ok(client, admin.headers, written[-1], [(f"检修通知{n}.txt", f"检修编号 GD-{n}".encode())])
            await asyncio.sleep(0)

    writer = asyncio.create_task(keep_writing())
    try:
        code, out = await kb("backup", str(backup_dir), env=env_for(settings, url=settings.database_url))
    finally:
        stop.set()
        await writer
    assert code == 0, out
    assert written, "no write happened while the backup ran"

    manifest = json.loads((backup_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["alembic_revision"] and manifest["counts"]["search_dictionary"] == 3
    assert {b["sha256"] for b in manifest["blobs"]} == column(backup_dir / "kb.sqlite3", "SELECT sha256 FROM blobs")

    code, out = await kb("restore", str(backup_dir), env=env_for(settings, restored))
    assert code == 0, out
    after = rows(restored / "kb.sqlite3")
    assert after == rows(backup_dir / "kb.sqlite3")  # the restore is the snapshot, row for row
    for table, old in before.items():  # everything written before the backup is there, unchanged
        assert set(old) <= set(after[table]), table
    snapshot_items = column(restored / "kb.sqlite3", "SELECT id FROM items")
    assert snapshot_items - set(items) <= set(written)  # the concurrent writes in the snapshot are whole:
    assert snapshot_items <= column(restored / "kb.sqlite3", "SELECT item_id FROM item_versions")
    shas = column(restored / "kb.sqlite3", "SELECT sha256 FROM blobs")
    hashes = blob_hashes(restored / "blobs")
    assert hashes == {s: s for s in shas}  # every referenced blob, named by its hash
    assert len(before_blobs) == 2 and before_blobs <= set(hashes)

    # The restored instance serves: the index was rebuilt from the database, dictionary and synonyms included.
    restored_settings = Settings(
        _env_file=None, env="test", data_dir=restored, worker_embedded=False, jwt_secret=settings.jwt_secret
    )
    application = create_app(restored_settings)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://restored") as c:
            assert ids(await search(c, admin.headers, "携号转网")) == [items[0]]
            assert ids(await search(c, admin.headers, "调制解调器")) == [items[1]]  # synonym of 光猫
            r = await c.get(f"/api/v1/items/{items[0]}/versions", headers=admin.headers)
            assert r.status_code == 200 and len(r.json()["items"]) == 2, r.text


async def test_restore_refuses_a_non_empty_folder_and_a_damaged_backup(
    sqlite_only: None, client: httpx.AsyncClient, admin: Actor, settings: Settings, tmp_path: Path
) -> None:
    await make_content(client, admin)
    backup_dir = tmp_path / "backup"
    code, out = await kb("backup", str(backup_dir), env=env_for(settings, url=settings.database_url))
    assert code == 0, out
    code, out = await kb("backup", str(backup_dir), env=env_for(settings, url=settings.database_url))
    assert code == 1 and "not empty" in out  # never writes into an earlier backup

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "kb.sqlite3").write_bytes(b"the production database")
    code, out = await kb("restore", str(backup_dir), env=env_for(settings, occupied))
    assert code == 1 and "not empty" in out and "--force" in out
    assert (occupied / "kb.sqlite3").read_bytes() == b"the production database"

    # a corrupted blob: refused before anything is written into the target
    manifest_text = (backup_dir / "manifest.json").read_text(encoding="utf-8")
    victim = next(p for p in (backup_dir / "blobs").rglob("*") if p.is_file())
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + b"X")
    code, out = await kb("restore", str(backup_dir), env=env_for(settings, tmp_path / "new1"))
    assert code == 1 and f"blob {victim.name}" in out and "corrupt" in out, out
    assert not (tmp_path / "new1" / "kb.sqlite3").exists()
    victim.write_bytes(good)

    # a truncated manifest: a clear error, not a traceback
    (backup_dir / "manifest.json").write_text(manifest_text[: len(manifest_text) // 2], encoding="utf-8")
    code, out = await kb("restore", str(backup_dir), env=env_for(settings, tmp_path / "new2"))
    assert code == 1 and "manifest.json is damaged or truncated" in out and "Traceback" not in out, out

    # repaired, --force replaces the occupied folder's data
    (backup_dir / "manifest.json").write_text(manifest_text, encoding="utf-8")
    code, out = await kb("restore", "--force", str(backup_dir), env=env_for(settings, occupied))
    assert code == 0, out
    assert rows(occupied / "kb.sqlite3")["items"] == rows(backup_dir / "kb.sqlite3")["items"]


async def test_backup_refuses_postgresql_and_points_to_pg_dump(tmp_path: Path) -> None:
    code, out = await kb(
        "backup",
        str(tmp_path / "b"),
        env={"KB_ENV": "test", "KB_DATA_DIR": str(tmp_path), "KB_DATABASE_URL": "postgresql+asyncpg://kb@127.0.0.1/kb"},
    )
    assert code == 1 and "pg_dump" in out and not (tmp_path / "b").exists()


async def test_backup_refuses_blobs_on_s3_and_says_what_to_back_up(tmp_path: Path) -> None:
    """The blobs would be missing from such a backup: kb backup refuses rather than copy an empty folder."""
    code, out = await kb(
        "backup",
        str(tmp_path / "b"),
        env={"KB_ENV": "test", "KB_DATA_DIR": str(tmp_path), "KB_BLOB_BACKEND": "s3", "KB_S3_BUCKET": "kb-blobs"},
    )
    assert code == 1 and "bucket" in out and not (tmp_path / "b").exists()
