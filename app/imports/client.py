"""`kb import` and `kb export`: a sync job's side, talking to a running service by URL with client
credentials (the OAuth2 client_credentials grant of POST /api/v1/auth/token).

`kb import` streams the file from disk (never read whole), sends an Idempotency-Key made of the
file's SHA-256 and the options (source, mode, dry run, confirmation, watermark, format, encoding),
so a retried nightly run answers the job the first attempt made instead of importing twice, then
follows the job's progress and prints its report. Exit codes: 0 done without failed rows, 1 rows
failed or the job failed, 2 the service refused the request or could not be reached, 3 a full
sync stopped for --confirm-mass-archive.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from app.attachments.storage import file_sha256

DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK = 1024 * 1024
FINAL = ("done", "failed", "needs_confirmation")
SHOWN_ERRORS = 20
EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_CONFIRM = 0, 1, 2, 3
CONTENT_TYPES = {
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
    ".csv": "text/csv",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".zip": "application/zip",
}
FORMAT_TYPES = {
    "ndjson": "application/x-ndjson",
    "json": "application/json",
    "csv": "text/csv",
    "xlsx": CONTENT_TYPES[".xlsx"],
    "zip": "application/zip",
}


class ClientError(Exception):
    """The service said no (a problem document) or could not be reached."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def _problem(r: httpx.Response) -> ClientError:
    try:
        body = r.json()
    except ValueError:
        body = {}
    code = body.get("code") if isinstance(body, dict) else None
    detail = (body.get("detail") or body.get("title")) if isinstance(body, dict) else None
    return ClientError(
        f"{r.status_code} {code or ''}: {detail or r.text[:300]}".replace(" :", ":"), r.status_code, code
    )


@dataclass
class Credentials:
    url: str
    client_id: str
    client_secret: str

    @classmethod
    def from_env(cls, url: str | None, client_id: str | None, client_secret: str | None) -> Credentials:
        cid = client_id or os.environ.get("KB_CLIENT_ID")
        secret = client_secret or os.environ.get("KB_CLIENT_SECRET")
        if not cid or not secret:
            raise ClientError(
                "client credentials are needed: --client-id/--client-secret or KB_CLIENT_ID/KB_CLIENT_SECRET"
            )
        return cls((url or os.environ.get("KB_URL") or DEFAULT_URL).rstrip("/"), cid, secret)


class KbClient:
    def __init__(self, creds: Credentials, *, timeout: float = 60) -> None:
        self.creds = creds
        self.http = httpx.Client(base_url=creds.url, timeout=httpx.Timeout(timeout, connect=10))
        self._token: str | None = None

    def __enter__(self) -> KbClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.http.close()

    def _sign_in(self) -> str:
        try:
            r = self.http.post(
                "/api/v1/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.creds.client_id,
                    "client_secret": self.creds.client_secret,
                },
            )
        except httpx.TransportError as e:
            raise ClientError(f"cannot reach {self.creds.url}: {e}") from e
        if r.status_code != 200:
            raise _problem(r)
        self._token = str(r.json()["access_token"])
        return self._token

    def request(self, method: str, path: str, *, stream: bool = False, **kw: Any) -> httpx.Response:
        """With a fresh token when the last one ran out (an import can outlast it)."""
        for attempt in (1, 2):
            token = self._token or self._sign_in()
            headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {token}"}
            try:
                req = self.http.build_request(method, path, headers=headers, **kw)
                r = self.http.send(req, stream=stream)
            except httpx.TransportError as e:
                raise ClientError(f"cannot reach {self.creds.url}: {e}") from e
            if r.status_code == 401 and attempt == 1 and "content" not in kw:
                r.close()
                self._token = None
                kw["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                continue
            return r
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self.request(method, path, **kw)
        if r.status_code >= 400:
            raise _problem(r)
        return dict(r.json())


# ---------------------------------------------------------------- import


def idempotency_key(sha256: str, params: dict[str, Any]) -> str:
    """The same file with the same options is the same request; a retry answers the first job."""
    options = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return "kb-import-" + hashlib.sha256(f"{sha256}?{options}".encode()).hexdigest()[:48]


def _chunks(path: Path, advance: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            advance(len(chunk))
            yield chunk


@dataclass
class Ui:
    """The progress bar (rich, on stderr) and the report (stdout)."""

    out: TextIO = sys.stdout
    quiet: bool = False

    def progress(self) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=self.quiet,
        )

    def line(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)


def import_file(
    creds: Credentials,
    path: Path,
    *,
    source: str,
    mode: str = "incremental",
    dry_run: bool = False,
    confirm_mass_archive: bool = False,
    watermark: str | None = None,
    fmt: str | None = None,
    encoding: str | None = None,
    key: str | None = None,
    poll: float = 0.5,
    ui: Ui | None = None,
) -> int:
    ui = ui or Ui()
    if not path.is_file():
        ui.line(f"kb import: no file {path}")
        return EXIT_REFUSED
    params: dict[str, Any] = {
        "source": source,
        "mode": mode,
        "dry_run": str(dry_run).lower(),
        "confirm_mass_archive": str(confirm_mass_archive).lower(),
        "file_name": path.name,
    }
    for name, value in (("watermark", watermark), ("format", fmt), ("encoding", encoding)):
        if value is not None:
            params[name] = value
    size = path.stat().st_size
    sha = file_sha256(path)
    headers = {
        "Content-Type": FORMAT_TYPES.get(fmt or "")
        or CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        "Content-Length": str(size),
        "Idempotency-Key": key or idempotency_key(sha, {k: v for k, v in params.items() if k != "file_name"}),
    }
    try:
        with KbClient(creds) as kb, ui.progress() as bar:
            kb._token or kb._sign_in()  # before the upload: a refused secret must not cost a whole upload
            task = bar.add_task(f"upload {path.name}", total=size)
            r = kb.request(
                "POST",
                "/api/v1/imports",
                params=params,
                headers=headers,
                content=_chunks(path, lambda n: bar.advance(task, n)),
            )
            if r.status_code != 202:
                raise _problem(r)
            job = r.json()
            replayed = r.headers.get("idempotent-replayed") == "true"
            rows = bar.add_task(f"import #{job['id']}", total=None)
            while job["state"] not in FINAL:
                p = job["progress"]
                bar.update(
                    rows,
                    description=f"import #{job['id']} {p['phase']}",
                    completed=p["rows_done"],
                    total=p["rows_total"],
                )
                time.sleep(poll)
                job = kb.json("GET", f"/api/v1/imports/{job['id']}")
            p = job["progress"]
            bar.update(
                rows,
                description=f"import #{job['id']} {job['state']}",
                completed=p["rows_done"],
                total=p["rows_total"] or p["rows_done"],
            )
    except ClientError as e:
        ui.line(f"kb import: {e.message}")
        return EXIT_REFUSED
    return report(job, replayed, ui)


def report(job: dict[str, Any], replayed: bool, ui: Ui) -> int:
    c = job["counts"]
    head = (
        f"import #{job['id']} into {job['source']} ({job['mode']}{', dry run' if job['dry_run'] else ''}): "
        f"{job['state']}"
    )
    ui.line(head + (" (replayed: this file was sent before with the same options)" if replayed else ""))
    ui.line(
        "  "
        + ", ".join(f"{k} {c.get(k, 0)}" for k in ("created", "updated", "unchanged", "archived", "deleted", "failed"))
    )
    for w in job["warnings"]:
        ui.line(f"  warning: {w}")
    if job["errors"]:
        ui.line(f"  row errors ({job['errors_total']}):")
        for e in job["errors"][:SHOWN_ERRORS]:
            where = " ".join(str(x) for x in (e["external_id"], e["field"]) if x)
            ui.line(f"    row {e['row']}{' ' + where if where else ''}: {e['code']}: {e['message']}")
        if job["errors_total"] > SHOWN_ERRORS:
            ui.line(f"    … all of them: GET /api/v1/imports/{job['id']}/errors?format=csv")
    if job["outcomes"]:
        ui.line("  " + ", ".join(f"{o['action']} {o['external_id']} (item {o['item_id']})" for o in job["outcomes"]))
        if c.get("archived", 0) + c.get("deleted", 0) > len(job["outcomes"]):
            ui.line(f"    … all of them: GET /api/v1/imports/{job['id']}/outcomes")
    if job["state"] == "needs_confirmation":
        ui.line(f"  {job['error']['message']}")
        ui.line("  nothing was written: run again with --confirm-mass-archive if the archiving is right")
        return EXIT_CONFIRM
    if job["state"] == "failed":
        err = job.get("error") or {}
        ui.line(f"  failed: {err.get('code')}: {err.get('message')}")
        return EXIT_FAILED
    return EXIT_FAILED if c.get("failed") else EXIT_OK


# ---------------------------------------------------------------- export


def export_file(
    creds: Credentials,
    out: Path,
    *,
    source: str,
    fmt: str = "ndjson",
    include_archived: bool = False,
    poll: float = 0.5,
    ui: Ui | None = None,
) -> int:
    """The export into `out` (written to `out`.part, renamed when whole), inline or through a job."""
    ui = ui or Ui()
    part = out.with_name(out.name + ".part")
    params = {"source": source, "format": fmt, "include_archived": str(include_archived).lower()}
    try:
        with KbClient(creds) as kb, ui.progress() as bar:
            r = kb.request("GET", "/api/v1/exports", params=params, stream=True)
            try:
                if r.status_code == 202:
                    r.read()
                    job = r.json()
                    task = bar.add_task(f"export #{job['id']}", total=None)
                    while job["state"] not in ("done", "failed"):
                        bar.update(task, completed=job["rows"], total=job["rows_total"])
                        time.sleep(poll)
                        job = kb.json("GET", f"/api/v1/exports/{job['id']}")
                    if job["state"] == "failed":
                        ui.line(f"kb export: export #{job['id']} failed: {(job['error'] or {}).get('message')}")
                        return EXIT_FAILED
                    bar.update(task, completed=job["rows"], total=job["rows_total"])
                    r.close()
                    r = kb.request("GET", job["file"], stream=True)
                if r.status_code != 200:
                    r.read()
                    raise _problem(r)
                rows = int(r.headers.get("x-export-rows", "0"))
                task = bar.add_task(f"download {out.name}", total=None)
                with part.open("wb") as f:
                    for chunk in r.iter_bytes(CHUNK):
                        f.write(chunk)
                        bar.advance(task, len(chunk))
            finally:
                r.close()
        part.replace(out)
    except ClientError as e:
        part.unlink(missing_ok=True)
        ui.line(f"kb export: {e.message}")
        return EXIT_REFUSED
    ui.line(f"exported {rows} items of {source} to {out} ({out.stat().st_size} bytes)")
    return EXIT_OK
