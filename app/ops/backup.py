"""`kb backup DIR` and `kb restore DIR` for the embedded default (SQLite file + local blob folder).

A backup folder holds ``kb.sqlite3`` (a snapshot by SQLite's online backup API, taken from the live
file while the service serves; safe with WAL), ``blobs/`` (the same ``ab/cd/<sha>`` layout as the
live store) and ``manifest.json`` (time, app version, Alembic revision, row counts, every blob with
its SHA-256 and size), written last: a folder without a valid manifest is not a backup. The managed
dictionary and synonyms are tables of the database (search_dictionary, search_synonyms), so the
snapshot carries them. The search index is not copied: restore rebuilds it from the database.

Consistency while serving: the database is snapshotted first, the blobs copied after. Blobs are
content-addressed and never rewritten, and a blob file is only deleted after its row is gone
(app/attachments/jobs.py deletes rows, commits, then files), so every blob the snapshot references
existed when the snapshot was taken. What can still vanish before it is copied is a blob that the
orphan collector removes in between: one no version carries and older than the hour of grace. Rather
than trust timing, the copy guards it: a referenced blob that is gone must be such an orphan in the
snapshot too; its rows are then dropped from the snapshot (the collector would have dropped them)
and listed in the manifest under ``dropped_orphans``. A missing blob that a version carries fails
the backup.

PostgreSQL (the scaled deployment) is refused: use ``pg_dump`` plus a copy of the blob store
(README, "Backup and restore").
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from app.attachments.storage import file_sha256, validate_key
from app.core.config import Settings

MANIFEST = "manifest.json"
DB_FILE = "kb.sqlite3"
BLOBS = "blobs"
FORMAT = 1
COUNTED = (
    "items",
    "item_versions",
    "acl_grants",
    "attachments",
    "blobs",
    "search_dictionary",
    "search_synonyms",
    "users",
    "roles",
    "departments",
    "taxonomy_nodes",
)


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


def _sqlite_path(settings: Settings) -> Path:
    if not settings.is_sqlite:
        raise BackupError(
            "kb backup/restore covers the embedded default (SQLite). For PostgreSQL use pg_dump and back up "
            "the blob store (README, 'Backup and restore')"
        )
    if settings.blob_backend != "local":
        raise BackupError(
            "kb backup/restore covers the embedded default (SQLite and local blobs). With KB_BLOB_BACKEND=s3 "
            "back up the bucket with the store's own tools (versioning, replication, `mc mirror`) beside the "
            "database (README, 'Backup and restore')"
        )
    path = settings.database_url.split(":///", 1)[1]
    if not path or path == ":memory:":
        raise BackupError("the database is not a file")
    return Path(path)


def _blob_path(root: Path, sha: str) -> Path:
    validate_key(sha)
    return root / sha[0:2] / sha[2:4] / sha


def _revision(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    out = {}
    for table in COUNTED:
        try:
            out[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except sqlite3.OperationalError:  # a table an older revision does not have
            continue
    return out


def _app_version() -> str:
    try:
        return metadata.version("kb-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def backup(settings: Settings, target: Path) -> dict[str, Any]:
    """Take an online backup into `target` (must be missing or empty); returns the manifest."""
    source = _sqlite_path(settings)
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; back up into a new folder")
    target.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)

    # 1. The database, by the online backup API: pages copied under a read transaction; SQLite
    #    restarts the copy when a writer changes it in between, so the snapshot is one consistent state.
    snapshot = target / DB_FILE
    live = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dest = sqlite3.connect(snapshot)
    try:
        live.execute("PRAGMA busy_timeout=30000")
        live.backup(dest)
    finally:
        live.close()
    try:
        dest.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it

        # 2. The blobs the snapshot references, copied after it (see the module docstring).
        blob_root = settings.data_dir / BLOBS
        blobs: list[dict[str, Any]] = []
        dropped: list[str] = []
        for sha, size in dest.execute("SELECT sha256, size FROM blobs ORDER BY sha256").fetchall():
            src = _blob_path(blob_root, sha)
            out = _blob_path(target / BLOBS, sha)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, out)
            except FileNotFoundError:
                carried = dest.execute(
                    "SELECT 1 FROM attachments a JOIN version_attachments va ON va.attachment_id = a.id "
                    "WHERE a.sha256 = ? LIMIT 1",
                    (sha,),
                ).fetchone()
                if carried:
                    raise BackupError(f"blob {sha} is referenced by a version but missing from {blob_root}") from None
                dest.execute("DELETE FROM attachments WHERE sha256 = ?", (sha,))
                dest.execute("DELETE FROM blobs WHERE sha256 = ?", (sha,))
                dest.commit()
                dropped.append(sha)
                continue
            digest = file_sha256(out)
            if digest != sha or out.stat().st_size != size:
                raise BackupError(f"blob {sha} in {blob_root} is corrupt (its content hashes to {digest})")
            _fsync(out)
            blobs.append({"sha256": sha, "size": size})

        manifest = {
            "format": FORMAT,
            "created_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "app_version": _app_version(),
            "alembic_revision": _revision(dest),
            "database": {"file": DB_FILE, "sha256": None},
            "counts": _counts(dest),
            "blobs": blobs,
            "dropped_orphans": dropped,
        }
    finally:
        dest.close()
    _fsync(snapshot)
    manifest["database"]["sha256"] = file_sha256(snapshot)
    tmp = target / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, target / MANIFEST)
    return manifest


def read_manifest(source: Path) -> dict[str, Any]:
    path = Path(source) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{source} is not a backup: {MANIFEST} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackupError(f"{path} is damaged or truncated ({exc}); the backup cannot be trusted") from None
    ok = (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT
        and isinstance(manifest.get("blobs"), list)
        and isinstance(manifest.get("database"), dict)
        and isinstance(manifest["database"].get("sha256"), str)
        and all(
            isinstance(b, dict) and isinstance(b.get("sha256"), str) and isinstance(b.get("size"), int)
            for b in manifest["blobs"]
        )
    )
    if not ok:
        raise BackupError(f"{path} is not a manifest this version understands (format {FORMAT})")
    return manifest


def verify(source: Path) -> dict[str, Any]:
    """Check the manifest, the database file and every blob against their recorded hashes."""
    source = Path(source)
    manifest = read_manifest(source)
    db = source / DB_FILE
    if not db.is_file() or file_sha256(db) != manifest["database"]["sha256"]:
        raise BackupError(f"{db} is missing or does not match the manifest's hash")
    for blob in manifest["blobs"]:
        path = _blob_path(source / BLOBS, blob["sha256"])
        if not path.is_file():
            raise BackupError(f"blob {blob['sha256']} listed in the manifest is missing from the backup")
        if path.stat().st_size != blob["size"] or file_sha256(path) != blob["sha256"]:
            raise BackupError(f"blob {blob['sha256']} in the backup is corrupt (its hash does not match)")
    return manifest


def restore(settings: Settings, source: Path, *, force: bool = False) -> dict[str, Any]:
    """Restore a backup into the data folder of `settings`, migrate it to head, rebuild the index."""
    target_db = _sqlite_path(settings)
    data = settings.data_dir
    if data.exists() and any(data.iterdir()) and not force:
        raise BackupError(f"{data} is not empty; restore into an empty folder or pass --force to replace it")
    manifest = verify(source)  # before anything in the target is touched
    if force:
        for name in (BLOBS, "search"):
            shutil.rmtree(data / name, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target_db}{suffix}").unlink(missing_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    target_db.parent.mkdir(parents=True, exist_ok=True)
    for blob in manifest["blobs"]:
        out = _blob_path(data / BLOBS, blob["sha256"])
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_blob_path(Path(source) / BLOBS, blob["sha256"]), out)
    tmp = target_db.with_name(target_db.name + ".restoring")
    shutil.copyfile(Path(source) / DB_FILE, tmp)
    os.replace(tmp, target_db)

    from app.cli import migrate_url

    migrate_url(settings.database_url)  # a backup of an older revision is brought to head
    indexed = asyncio.run(_rebuild_index(settings))
    return {**manifest, "indexed": indexed}


async def _rebuild_index(settings: Settings) -> int:
    from app.core.db import make_engine, make_sessionmaker
    from app.search.indexing import build_documents, language_resources, searchable_item_ids
    from app.search.jobs import BATCH
    from app.services import build_search

    engine = make_engine(settings.database_url)
    backend = build_search(settings)
    await backend.open()
    try:
        async with make_sessionmaker(engine)() as s:
            await backend.set_language(await language_resources(s))
            ids = await searchable_item_ids(s)
            docs = []
            for start in range(0, len(ids), BATCH):
                docs += (await build_documents(s, ids[start : start + BATCH]))[0]
        await backend.rebuild(docs)
    finally:
        await backend.close()
        await engine.dispose()
    return len(docs)
