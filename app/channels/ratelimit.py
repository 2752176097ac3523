"""Rate limits of the channel read API: per client or user, and per address for anonymous callers.

The limiter is pyrate-limiter's: its GCRA algorithm (`N/interval` sustained, bursts up to N)
decides, in a `StateBucket` per caller key, over a store chosen by `KB_RATE_LIMIT_STORAGE`:

- `sqlite` (default): one small SQLite file under the data folder, shared by every API process
  of this machine (`serve` with `KB_WORKERS=N`). `SQLiteStateStore` below is the library's
  `StateStore` extension point, whose one job is atomicity: it persists GCRA's state per key in
  one transaction, serialized across processes by an `flock` (a kernel-woken wait, where
  SQLite's own busy handler would sleep a whole millisecond or more).
- `redis://host:port/db`: the library's `RedisStateStore` (the GCRA step as one Lua script),
  for several hosts.
- `memory`: the library's in-process store; every process counts alone (a single process only).

A denied key is remembered in the process until its retry time: GCRA's state only moves on an
admission, so nothing can be admitted before then and the flood is answered without the store.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import re
import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import Depends, Request, Response
from pyrate_limiter import (
    GCRA,
    Decision,
    Duration,
    InMemoryStateStore,
    Rate,
    RateItem,
    RedisStateStore,
    StateAlgorithm,
    StateBucket,
    StateStore,
    WallClock,
)

from app.channels.access import Caller, ChannelCaller
from app.core.config import Settings
from app.core.errors import RateLimited

log = logging.getLogger(__name__)
_UNITS = {"second": Duration.SECOND, "minute": Duration.MINUTE, "hour": Duration.HOUR, "day": Duration.DAY}
_LIMIT = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
# Buckets (and with `memory` their state) kept per process; the least recently used go first.
MAX_KEYS = 100_000
_CLOCK = WallClock()  # epoch milliseconds: the same in every process and on every host


def parse_limit(text: str) -> Rate:
    """`1200/minute`, `3/second`, `10 per 5 minutes`, as a pyrate-limiter Rate."""
    match = _LIMIT.match(text)
    if not match or int(match.group(1)) < 1 or (match.group(2) is not None and int(match.group(2)) < 1):
        raise ValueError(f"not a rate limit: {text!r} (e.g. 1200/minute, 3/second, 10 per 5 minutes)")
    count, every, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3).lower()
    return Rate(count, _UNITS[unit] * every)


class SQLiteStateStore(StateStore):
    """One key's GCRA state, a row of a SQLite file shared by the processes of one machine."""

    is_async = False
    default_clock = _CLOCK

    def __init__(self, db: SharedSQLite, key: str) -> None:
        self.db, self.key = db, key

    def check(self, algorithm: StateAlgorithm, rates: list[Rate], now: int, weight: int) -> Decision:
        return self.db.check(self.key, algorithm, rates, now, weight)

    def read(self, algorithm: StateAlgorithm, rates: list[Rate]) -> tuple[float, ...]:
        row = self.db.conn.execute("SELECT state FROM rate_state WHERE key = ?", (self.key,)).fetchone()
        return algorithm.decode(row[0].split(",")) if row else algorithm.initial(rates)

    def reset(self) -> None:
        with self.db.locked():
            self.db.conn.execute("DELETE FROM rate_state WHERE key = ?", (self.key,))


class SharedSQLite:
    """The SQLite file and its lock file; one connection per process (the event loop's thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        # Autocommit: the transactions below are explicit. synchronous=OFF: a rate-limit counter
        # lost in a power cut costs nothing, an fsync per check would cost milliseconds.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        with self.locked():
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=OFF")
            self.conn.execute("PRAGMA mmap_size=67108864")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS rate_state "
                "(key TEXT PRIMARY KEY, state TEXT NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID"
            )
        self._next_purge = 0.0

    def locked(self) -> _Flock:
        return _Flock(self.lock_fd)

    def check(self, key: str, algorithm: StateAlgorithm, rates: list[Rate], now: int, weight: int) -> Decision:
        with self.locked():
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT state FROM rate_state WHERE key = ?", (key,)).fetchone()
                state = algorithm.decode(row[0].split(",")) if row else algorithm.initial(rates)
                new_state, decision = algorithm.step(rates, state, now, weight)
                if decision.allowed:
                    # GCRA's state means nothing once its time has passed: then the key may go.
                    expires = max(int(v) for v in new_state) // 1000
                    conn.execute(
                        "INSERT OR REPLACE INTO rate_state VALUES (?, ?, ?)",
                        (key, ",".join(str(int(v)) for v in new_state), expires),
                    )
                if now > self._next_purge:
                    conn.execute("DELETE FROM rate_state WHERE expires < ?", (now,))
                    self._next_purge = now + 60_000
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return decision

    def close(self) -> None:
        self.conn.close()
        os.close(self.lock_fd)


class _Flock:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class KeyedBuckets:
    """A pyrate-limiter `StateBucket` per (scope, caller key), GCRA throughout, over one store."""

    def __init__(self, storage: str, data_dir: Path) -> None:
        self.algorithm = GCRA()
        self.buckets: OrderedDict[tuple[str, str], StateBucket] = OrderedDict()
        self.sqlite: SharedSQLite | None = None
        self.redis: Any = None
        if storage == "sqlite":
            self.sqlite = SharedSQLite(data_dir / "ratelimit.sqlite3")
        elif storage.startswith(("redis://", "rediss://", "unix://")):
            from redis.asyncio import Redis

            self.redis = Redis.from_url(storage)
        elif storage != "memory":
            raise ValueError(f"KB_RATE_LIMIT_STORAGE is sqlite, memory or redis://..., got {storage!r}")

    def bucket(self, scope: str, rate: Rate, key: str) -> StateBucket:
        bucket = self.buckets.get((scope, key))
        if bucket is not None:
            self.buckets.move_to_end((scope, key))
            return bucket
        store: StateStore
        if self.sqlite is not None:
            store = SQLiteStateStore(self.sqlite, f"{scope}:{key}")
        elif self.redis is not None:
            store = RedisStateStore(self.redis, f"kb:ratelimit:{scope}:{key}")
        else:
            store = InMemoryStateStore()
        bucket = StateBucket([rate], algorithm=self.algorithm, store=store, clock=_CLOCK)
        self.buckets[(scope, key)] = bucket
        if len(self.buckets) > MAX_KEYS:
            self.buckets.popitem(last=False)
        return bucket

    async def aclose(self) -> None:
        self.buckets.clear()
        if self.sqlite is not None:
            self.sqlite.close()
        if self.redis is not None:
            await self.redis.aclose()


class RateLimiter:
    """The limits of `KB_RATE_LIMIT_CLIENT` (clients and users) and `KB_RATE_LIMIT_ANONYMOUS`
    (per address), checked by `check(key, anonymous)`; `None` when admitted, else the seconds to wait."""

    def __init__(self, settings: Settings) -> None:
        self.client = parse_limit(settings.rate_limit_client)
        self.anonymous = parse_limit(settings.rate_limit_anonymous)
        self.factory = KeyedBuckets(settings.rate_limit_storage, settings.data_dir)
        self.denied: dict[str, int] = {}  # key -> epoch ms before which it is denied (see the module doc)

    def rate(self, anonymous: bool) -> Rate:
        return self.anonymous if anonymous else self.client

    async def check(self, key: str, anonymous: bool) -> int | None:
        """Milliseconds to wait when `key` is over its limit, else None (and the request counts)."""
        now = _CLOCK.now()
        until = self.denied.get(key)
        if until is not None:
            if now < until:
                return until - now
            del self.denied[key]
        rate = self.rate(anonymous)
        bucket = self.factory.bucket("anon" if anonymous else "client", rate, key)
        decision = bucket.put_decision(RateItem(key, now))
        if not isinstance(decision, Decision):
            decision = await decision
        if decision.allowed:
            return None
        wait = decision.retry_after_ms if decision.retry_after_ms is not None else rate.interval
        if len(self.denied) > MAX_KEYS:
            self.denied.clear()
        self.denied[key] = now + wait
        return wait

    async def aclose(self) -> None:
        await self.factory.aclose()


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    return RateLimiter(settings) if settings.rate_limit_enabled else None


def _policy(rate: Rate) -> str:
    return f"{rate.limit};w={rate.interval // 1000}"


async def check_rate(request: Request, caller: ChannelCaller) -> str | None:
    """429 `rate_limited` with `Retry-After` past the caller's limit; else the `RateLimit-Policy`
    header's value (None when limits are off). For routes that resolve their caller themselves
    (the change feed, the screen pop); the channel routers use the `RateLimit` dependency."""
    limiter: RateLimiter | None = request.app.state.services.get("rate_limiter")
    if limiter is None:
        return None
    anonymous = caller.is_anonymous
    try:
        wait_ms = await limiter.check(caller.key, anonymous)
    except Exception:  # the shared store (Redis) is down: serve the answers rather than fail them
        log.warning("rate limit store unavailable; request admitted unchecked", exc_info=True)
        return None
    rate = limiter.rate(anonymous)
    if wait_ms is None:
        return _policy(rate)
    retry = max(1, math.ceil(wait_ms / 1000))
    who = "this address" if anonymous else "this client"
    raise RateLimited(
        f"More than {rate.limit} requests per {rate.interval // 1000} s from {who}; retry after {retry} s",
        code="rate_limited",
        headers={
            "Retry-After": str(retry),
            "RateLimit-Policy": _policy(rate),
            "RateLimit": f"limit={rate.limit}, remaining=0, reset={retry}",
        },
        limit=rate.limit,
        window_seconds=rate.interval // 1000,
        retry_after=retry,
    )


async def rate_limit(request: Request, response: Response, caller: Caller) -> None:
    """The channel routers' dependency (`check_rate`)."""
    policy = await check_rate(request, caller)
    if policy:
        response.headers["RateLimit-Policy"] = policy


RateLimit = Depends(rate_limit)
