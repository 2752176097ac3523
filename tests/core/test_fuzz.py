"""The fuzz stage: schemathesis over the served OpenAPI of the embedded default (a real
`python -m app serve` on SQLite), as an administrator and anonymously, must find nothing.

Phases: `coverage` (every boundary and wrong type of every parameter, ~11,000 requests, all
operations as the administrator; anonymously only the operations open without a token, since the
others answer 401 before reading a parameter), then `examples`, `fuzzing` and `stateful` over all
operations. `make test` runs the random phases short (10 examples per operation); `make fuzz`
sets KB_FUZZ_MAX_EXAMPLES=200."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
ADMIN, PASSWORD = "fuzz.admin", "Passw0rd!模糊测试"
ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {
        **os.environ,
        "KB_ENV": "test",
        "KB_DATA_DIR": str(data),
        "KB_DATABASE_URL": f"sqlite+aiosqlite:///{data}/kb.db",
        "KB_JWT_SECRET": "fuzz-secret-" + "x" * 32,
        "KB_PORT": str(port),
        "KB_LOG_LEVEL": "ERROR",
        "PYTHONPATH": str(ROOT),  # this checkout's `app`, whatever the editable install points at
    }
    for cmd in (["migrate"], ["create-admin", "--username", ADMIN, "--password", PASSWORD]):
        subprocess.run([sys.executable, "-m", "app", *cmd], cwd=data, env=env, check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "app", "serve"], cwd=data, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "the server exited"
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


# The operations an anonymous caller may reach: the public channels, sign-in, the change feed, probes.
PUBLIC = r"^/(healthz|readyz|api/v1/(channels|auth|changes)\b)"


def fuzz(base: str, tmp: Path, *headers: str, phases: str, paths: str | None = None) -> None:
    examples = os.environ.get("KB_FUZZ_MAX_EXAMPLES", "10")
    cmd = [
        str(SCHEMATHESIS if SCHEMATHESIS.exists() else shutil.which("schemathesis")),
        "run",
        f"{base}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        phases,
        "--max-examples",
        examples,
        "--seed",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(tmp),
        "--no-color",
    ]
    if paths:
        cmd += ["--include-path-regex", paths]
    for h in headers:
        cmd += ["-H", h]
    run = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=3600)  # its cache stays there
    # The summary (operations, examples, failures, time) stays in the log: `pytest -rA` shows it.
    print(run.stdout[-3000:])
    assert run.returncode == 0, f"schemathesis found failures:\n{run.stdout[-20000:]}\n{run.stderr[-3000:]}"


def test_fuzz_anonymously(served: str, tmp_path: Path) -> None:
    fuzz(served, tmp_path, phases="coverage", paths=PUBLIC)
    fuzz(served, tmp_path, phases="examples,fuzzing,stateful")


def test_fuzz_as_administrator(served: str, tmp_path: Path) -> None:
    r = httpx.post(
        f"{served}/api/v1/auth/token", data={"grant_type": "password", "username": ADMIN, "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    fuzz(
        served,
        tmp_path,
        f"Authorization: Bearer {r.json()['access_token']}",
        phases="coverage,examples,fuzzing,stateful",
    )
