"""`python -m app <command>` (also the `kb` console script)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from app.core.config import get_settings

ROOT = Path(__file__).resolve().parent.parent


def migrate(revision: str = "head") -> None:
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate_url(settings.database_url, revision)


def migrate_url(url: str, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    command.upgrade(cfg, revision)


async def _create_admin(username: str, password: str) -> None:
    from app.core.db import make_engine, make_sessionmaker
    from app.identity.service import ensure_admin

    engine = make_engine(get_settings().database_url)
    async with make_sessionmaker(engine)() as s:
        _, created = await ensure_admin(s, username, password)
    await engine.dispose()
    print(f"administrator {username!r} {'created' if created else 'already exists (password unchanged)'}")


async def _seed_demo() -> None:
    from app.core.db import make_engine, make_sessionmaker
    from app.seed import seed_demo

    engine = make_engine(get_settings().database_url)
    async with make_sessionmaker(engine)() as s:
        lines = await seed_demo(s)
    await engine.dispose()
    print("\n".join(lines))


async def _worker() -> None:
    import signal

    from app import jobs_registry  # noqa: F401
    from app.core.db import make_engine, make_sessionmaker
    from app.main import build_services
    from app.search.indexing import language_resources
    from app.services import close as close_services
    from app.workers.worker import Worker

    settings = get_settings()
    engine = make_engine(settings.database_url)
    services = await build_services(settings)
    if not services["search"].writable:
        await close_services(services)
        sys.exit(
            "another process holds the embedded search index's writer lock: with the embedded backend the "
            "worker runs inside the API (KB_WORKER_EMBEDDED=true); a standalone worker needs Elasticsearch"
        )
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as s:
        await services["search"].set_language(await language_resources(s))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Worker(sessionmaker, settings, services=services).run_forever(stop)
    await close_services(services)
    await engine.dispose()


def export_openapi(path: Path) -> None:
    from app.main import create_app

    spec = create_app().openapi()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kb", description="Call-center knowledge service")
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("migrate", help="upgrade the database (default: to head)")
    m.add_argument("revision", nargs="?", default="head")
    a = sub.add_parser("create-admin", help="create an administrator if that user does not exist")
    a.add_argument("--username", required=True)
    a.add_argument("--password", required=True)
    sub.add_parser("seed-demo", help="create the demo users, roles and content (idempotent)")
    sub.add_parser("serve", help="serve the API (KB_HOST, KB_PORT, KB_WORKERS)")
    sub.add_parser("worker", help="run a standalone job worker")
    b = sub.add_parser("backup", help="online backup of the embedded default (SQLite, blobs) into DIR")
    b.add_argument("dir", type=Path)
    r = sub.add_parser("restore", help="restore a backup from DIR into KB_DATA_DIR and rebuild the index")
    r.add_argument("dir", type=Path)
    r.add_argument("--force", action="store_true", help="replace the data of a non-empty KB_DATA_DIR")
    o = sub.add_parser("export-openapi", help="write the OpenAPI document")
    o.add_argument("--out", type=Path, default=ROOT / "openapi" / "openapi.json")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="the running service (env KB_URL, default http://127.0.0.1:8000)")
    remote.add_argument("--client-id", help="a sync client with import:<source> (env KB_CLIENT_ID)")
    remote.add_argument("--client-secret", help="its secret (env KB_CLIENT_SECRET)")
    remote.add_argument("--quiet", action="store_true", help="no progress bar")
    i = sub.add_parser(
        "import",
        parents=[remote],
        help="import a file into a sync source through a running service "
        "(exit 0 done, 1 rows or the job failed, 2 refused, 3 needs --confirm-mass-archive)",
    )
    i.add_argument("file", type=Path)
    i.add_argument("--source", required=True)
    i.add_argument("--mode", choices=["incremental", "full"], default="incremental")
    i.add_argument("--dry-run", action="store_true", help="validate and report, write nothing")
    i.add_argument(
        "--confirm-mass-archive",
        action="store_true",
        help="let a full sync archive more than the source's max_archive_share",
    )
    i.add_argument("--watermark", help="stored on the source when the job ends without failed rows")
    i.add_argument("--format", choices=["ndjson", "json", "csv", "xlsx", "zip"], help="default: from the file")
    i.add_argument("--encoding", help="CSV text encoding (default: detected)")
    i.add_argument("--idempotency-key", help="default: from the file's SHA-256 and the options")
    x = sub.add_parser("export", parents=[remote], help="export a sync source's items (the import's columns)")
    x.add_argument("--source", required=True)
    x.add_argument("--format", choices=["ndjson", "csv", "xlsx"], default="ndjson")
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--include-archived", action="store_true")
    args = parser.parse_args(argv)

    if args.cmd == "migrate":
        migrate(args.revision)
    elif args.cmd == "create-admin":
        if len(args.password) < 8:
            sys.exit("the password needs at least 8 characters")
        asyncio.run(_create_admin(args.username, args.password))
    elif args.cmd == "seed-demo":
        asyncio.run(_seed_demo())
    elif args.cmd == "serve":
        import uvicorn

        s = get_settings()
        if s.workers > 1:
            from app.core.logging import configure_logging
            from app.ops.serving import serve_processes

            configure_logging(s.log_level)
            serve_processes(s.host, s.port, s.workers, s.data_dir / "metrics")
        else:
            uvicorn.run("app.main:app_factory", factory=True, host=s.host, port=s.port, log_config=None)
    elif args.cmd == "worker":
        from app.core.logging import configure_logging

        configure_logging(get_settings().log_level)
        asyncio.run(_worker())
    elif args.cmd in ("backup", "restore"):
        from app.ops.backup import BackupError, backup, restore

        try:
            if args.cmd == "backup":
                m = backup(get_settings(), args.dir)
                print(
                    f"backup in {args.dir}: revision {m['alembic_revision']}, {m['counts'].get('items', 0)} items, "
                    f"{len(m['blobs'])} blobs"
                )
            else:
                m = restore(get_settings(), args.dir, force=args.force)
                print(
                    f"restored {args.dir} into {get_settings().data_dir}: {m['counts'].get('items', 0)} items, "
                    f"{len(m['blobs'])} blobs, {m['indexed']} documents indexed"
                )
        except BackupError as exc:
            sys.exit(f"kb {args.cmd}: {exc}")
    elif args.cmd == "export-openapi":
        export_openapi(args.out)
    elif args.cmd in ("import", "export"):
        from app.imports import client

        try:
            creds = client.Credentials.from_env(args.url, args.client_id, args.client_secret)
        except client.ClientError as exc:
            sys.exit(f"kb {args.cmd}: {exc.message}")
        ui = client.Ui(quiet=args.quiet)
        if args.cmd == "import":
            code = client.import_file(
                creds,
                args.file,
                source=args.source,
                mode=args.mode,
                dry_run=args.dry_run,
                confirm_mass_archive=args.confirm_mass_archive,
                watermark=args.watermark,
                fmt=args.format,
                encoding=args.encoding,
                key=args.idempotency_key,
                ui=ui,
            )
        else:
            code = client.export_file(
                creds, args.out, source=args.source, fmt=args.format, include_archived=args.include_archived, ui=ui
            )
        sys.exit(code)


if __name__ == "__main__":
    main()
