"""Cost of one rate-limit check (app/channels/ratelimit.py `RateLimiter.check`), in µs.

    .venv/bin/python bench/ratelimit.py
    .venv/bin/python bench/ratelimit.py --checks 50000 --redis redis://127.0.0.1:6379/15

Each run checks --checks requests spread over --keys caller keys (limits high enough that every
check is admitted: the path every served request pays), then a flood of one key over its limit
(the denied path). Stores: `sqlite` (the embedded default: a file shared by the processes),
`memory`, and `redis` when --redis is given. "2 processes" runs the same checks in two processes
at once on one SQLite file (or Redis), checks back to back (the worst lock contention) and
with --work-us of CPU between checks (a served request's other work). Only the checks are
timed, lock waits included.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path

from app.channels.ratelimit import RateLimiter
from app.core.config import Settings


def settings(storage: str, data: Path) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=data,
        rate_limit_storage=storage,
        rate_limit_client="100000000/minute",
        rate_limit_anonymous="5/minute",
    )


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def run_checks(storage: str, data: Path, checks: int, keys: int, tag: str, work_us: float = 0) -> float:
    """µs per check, the checks alone timed; `work_us` of CPU between checks stands for the rest
    of a request (0: checks back to back, the worst contention)."""
    limiter = RateLimiter(settings(storage, data))
    names = [f"client:{tag}{i}" for i in range(keys)]
    for name in names:  # warm: buckets built, rows present
        await limiter.check(name, False)
    spent = 0.0
    for i in range(checks):
        start = time.perf_counter()
        assert await limiter.check(names[i % keys], False) is None
        spent += time.perf_counter() - start
        if work_us:
            busy(work_us / 1e6)
    await limiter.aclose()
    return spent / checks * 1e6


async def run_denied(storage: str, data: Path, checks: int) -> float:
    limiter = RateLimiter(settings(storage, data))
    address = f"ip:203.0.113.9-{time.time_ns()}"  # a key no earlier run (in Redis) has used
    start = time.perf_counter()
    denied = 0
    for _ in range(checks):
        denied += await limiter.check(address, True) is not None
    elapsed = time.perf_counter() - start
    await limiter.aclose()
    assert denied == checks - 5
    return elapsed / checks * 1e6


def _child(
    storage: str, data: str, checks: int, keys: int, tag: str, work_us: float, out: multiprocessing.Queue
) -> None:
    out.put(asyncio.run(run_checks(storage, Path(data), checks, keys, tag, work_us)))


def contended(storage: str, data: Path, checks: int, keys: int, same_keys: bool, work_us: float = 0) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(storage, str(data), checks, keys, "" if same_keys else f"p{n}-", work_us, out))
        for n in range(2)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=20000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument(
        "--work-us",
        type=float,
        default=600,
        help="CPU per request besides the check (1,500 req/s on 2 cores: ~1,300 µs; 600 is harsher)",
    )
    parser.add_argument("--redis", help="a Redis URL to measure too, e.g. redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    stores = ["sqlite", "memory"] + ([args.redis] if args.redis else [])
    for storage in stores:
        name = storage.split(":")[0]
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            one = asyncio.run(run_checks(storage, data, args.checks, args.keys, "a"))
            denied = asyncio.run(run_denied(storage, data, args.checks))
            print(f"{name:7s} 1 process : {one:7.1f} µs/check admitted, {denied:5.1f} µs/check denied (flood)")
            if storage == "memory":
                continue  # each process counts alone: nothing is contended
            for same in (False, True):
                two = contended(storage, data, args.checks, args.keys, same)
                label = "same keys" if same else "own keys "
                print(
                    f"{name:7s} 2 processes, {label}, back to back: " + ", ".join(f"{t:.1f}" for t in two) + " µs/check"
                )
            two = contended(storage, data, args.checks // 4, args.keys, True, args.work_us)
            print(
                f"{name:7s} 2 processes, same keys, {args.work_us:.0f} µs of request work between checks: "
                + ", ".join(f"{t:.1f}" for t in two)
                + " µs/check"
            )


if __name__ == "__main__":
    main()
