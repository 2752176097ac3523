"""Real databases for every test: SQLite always, PostgreSQL when reachable (required with CI=true).

Each database is created for this test session, built by the real Alembic migrations,
emptied before every test, and dropped at the end. No other database is touched.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.config import Settings
from app.core.db import make_engine
from app.core.security import hash_secret
from app.identity.models import Role, User
from app.identity.permissions import DEFAULT_ROLES
from app.main import create_app
from app.models import Base

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("KB_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "Passw0rd!测试"


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


async def _pg_available() -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def _backends() -> list[str]:
    wanted = os.environ.get("KB_TEST_DATABASES", "sqlite,postgresql").split(",")
    out = ["sqlite"] if "sqlite" in wanted else []
    if "postgresql" in wanted:
        if asyncio.run(_pg_available()):
            out.append("postgresql")
        elif os.environ.get("CI") == "true":
            raise RuntimeError(f"PostgreSQL is required with CI=true and is not reachable at {PG_ADMIN_URL}")
    return out


BACKENDS = _backends()


@dataclass
class Database:
    kind: str
    url: str
    engine: AsyncEngine

    async def truncate(self) -> None:
        """DELETE, not TRUNCATE: on tables this small it takes milliseconds where PostgreSQL's
        TRUNCATE of every table takes half a second. Ids are not restarted: tests never rely on them."""
        async with self.engine.begin() as conn:
            if self.kind == "sqlite":
                await conn.execute(text("PRAGMA defer_foreign_keys=ON"))  # checked at commit, all empty
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(table.delete())


async def create_database(kind: str, tmp: Path) -> tuple[str, Callable[[], Any]]:
    """A new empty database; returns its URL and an async dropper."""
    if kind == "sqlite":
        path = tmp / f"kb-{uuid.uuid4().hex[:8]}.sqlite3"

        async def drop_sqlite() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        return f"sqlite+aiosqlite:///{path}", drop_sqlite
    import asyncpg

    name = f"kb_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")

    async def drop_pg() -> None:
        c = await asyncpg.connect(PG_ADMIN_URL)
        await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await c.close()

    return f"{base}/{name}", drop_pg


@pytest.fixture(scope="session", params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    kind = request.param
    url, drop = await create_database(kind, tmp_path_factory.mktemp(kind))
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    engine = make_engine(url)
    try:
        yield Database(kind, url, engine)
    finally:
        await engine.dispose()
        await drop()


@pytest.fixture
async def db(database: Database) -> Database:
    await database.truncate()
    return database


@pytest.fixture
def settings(db: Database, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # a developer's .env must not change the tests
        env="test",
        database_url=db.url,
        data_dir=tmp_path / "data",
        worker_embedded=False,
        job_backoff_seconds=0,
        jwt_secret="test-secret-" + "x" * 40,
        login_max_failures=5,
        embedder="off",  # the semantic leg's tests switch it on (tests/search/test_semantic.py)
    )


@pytest.fixture(scope="session")
async def base_app(database: Database, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """One app per database for the session: building FastAPI's routes and opening the search
    engine cost about a second, which every test would pay again."""
    base = Settings(
        _env_file=None,
        env="test",
        database_url=database.url,
        worker_embedded=False,
        data_dir=tmp_path_factory.mktemp("app"),
        jwt_secret="test-secret-" + "x" * 40,
        embedder="off",
    )
    application = create_app(base)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def app(base_app: Any, settings: Settings) -> AsyncIterator[Any]:
    """The session's app, reset to this test's settings, data folder, empty search index and
    default roles and item types (the database was emptied by `db`)."""
    from app.main import ensure_defaults
    from app.search.documents import LanguageResources
    from app.taxonomy.service import forget_node_names

    forget_node_names()  # node ids restart in the emptied database
    from app.channels.render import cache_clear as forget_renders

    forget_renders()  # so do version ids on SQLite: a render cached by version id must not outlive its test
    from app.channels.publiccache import PublicCache

    # and the change feed's numbers: anonymous answers kept under the last test's feed must go too
    base_app.state.public_cache = PublicCache(base_app.state.sessionmaker, settings.channel_cache_seconds)
    services = base_app.state.services
    search = services["search"]
    if search.analyzer.resources != LanguageResources():  # a test changed the dictionary or synonyms
        await search.set_language(LanguageResources())
    if not await search.health():  # a test deleted the index directory
        await search.open()
    await search.rebuild([])
    fresh = await build_fresh_blobs(settings)
    previous = services.get("blobs")
    if previous is not None and hasattr(previous, "aclose"):  # the last test's S3 client
        await previous.aclose()
    services.update(fresh, settings=settings)
    from app.search.semantic import Semantic

    services["semantic"] = Semantic("off")  # a test that switched the embedder on leaves it off
    # A limiter of this test's own (its store under the test's data folder): no test is throttled by another's calls.
    from app.channels.ratelimit import build_rate_limiter

    previous_limiter = services.get("rate_limiter")
    if previous_limiter is not None:
        await previous_limiter.aclose()
    services["rate_limiter"] = build_rate_limiter(settings)
    base_app.state.settings = settings
    async with base_app.state.sessionmaker() as s:
        await ensure_defaults(s)
    yield base_app
    # this test's searches and channel events, before the next test empties the database
    await base_app.state.search_log.flush()
    await base_app.state.channel_events.flush()
    base_app.state.channel_events.forget_rankings()


async def build_fresh_blobs(settings: Settings) -> dict[str, Any]:
    from app.attachments.storage import build_blob_store

    return {"blobs": build_blob_store(settings)}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 protocol server (moto, in a child process) for the S3 blob store's tests."""
    from tests.s3_server import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def session(app: Any) -> AsyncIterator[AsyncSession]:
    async with app.state.sessionmaker() as s:
        yield s


_HASH: dict[str, str] = {}


def password_hash() -> str:
    if "h" not in _HASH:  # argon2 is slow on purpose; hash the shared test password once
        _HASH["h"] = hash_secret(PASSWORD)
    return _HASH["h"]


@dataclass
class Actor:
    user: User
    headers: dict[str, str]


class People:
    """Creates users with given roles or permissions and signs them in (real JWTs)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def roles(self) -> dict[str, Role]:
        from app.identity.service import ensure_default_roles

        async with self.app.state.sessionmaker() as s:
            roles = await ensure_default_roles(s)
            await s.commit()
            return roles

    async def make(
        self,
        username: str | None = None,
        *,
        role: str | None = None,
        permissions: list[str] | None = None,
        department_id: int | None = None,
    ) -> Actor:
        username = username or f"u{secrets.token_hex(4)}"
        async with self.app.state.sessionmaker() as s:
            from app.identity.service import ensure_default_roles

            roles = await ensure_default_roles(s)
            assigned = []
            if role:
                assigned.append(roles[role])
            if permissions is not None:
                custom = Role(name=f"r_{username}", permissions=permissions)
                s.add(custom)
                assigned.append(custom)
            user = User(
                username=username,
                display_name=username,
                password_hash=password_hash(),
                roles=assigned,
                department_id=department_id,
            )
            s.add(user)
            await s.commit()
            await s.refresh(user)
        return Actor(user, self.headers_for(user))

    def headers_for(self, user: User) -> dict[str, str]:
        token, _ = self.app.state.token_codec.encode(
            {"sub": f"user:{user.id}", "typ": "access", "ver": user.token_version},
            self.app.state.token_codec.access_ttl,
        )
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def people(app: Any) -> People:
    return People(app)


@pytest.fixture
async def admin(people: People) -> Actor:
    return await people.make("admin", role="admin")


def skip_outside_ci(reason: str) -> None:
    """A part this machine may lack (a browser, a server binary, the shared samples): skipped on a
    developer's machine, saying why; with CI=true it must be there, so the test fails instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {reason}")
    pytest.skip(reason)


def assert_problem(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers["content-type"]
    body = resp.json()
    assert body["status"] == status and body["type"].startswith("/problems/") and body["title"]
    if code is not None:
        assert body["code"] == code, body
    return body


__all__ = ["DEFAULT_ROLES", "PASSWORD", "Actor", "People", "assert_problem"]
