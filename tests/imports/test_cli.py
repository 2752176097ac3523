"""`kb import` / `kb export` for real: a served instance (`python -m app serve`, its embedded
worker), a sync client with a real secret, and the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy import select

from app.core.config import Settings
from app.core.security import hash_secret
from app.identity.models import ApiClient
from app.knowledge.models import Item
from tests.conftest import ROOT
from tests.imports.conftest import ROWS, Importer, ndjson
from tests.knowledge.conftest import Kb
from tests.ops.served import free_port, serve_env, served

SECRET = "crm-nightly-秘密-0123456789"


async def kb_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_kb_import_and_export_through_a_running_service(
    importer: Importer, kb: Kb, settings: Settings, tmp_path: Path
) -> None:
    await importer.source()
    async with importer.app.state.sessionmaker() as s:
        s.add(
            ApiClient(
                client_id="crm-nightly", name="CRM 夜间同步", secret_hash=hash_secret(SECRET), scopes=["import:crm"]
            )
        )
        await s.commit()
    port = free_port()
    env = serve_env(settings, tmp_path / "served", port, KB_EXPORT_INLINE_MAX_ITEMS="3")
    cli_env = {**env, "KB_URL": f"http://127.0.0.1:{port}", "KB_CLIENT_ID": "crm-nightly", "KB_CLIENT_SECRET": SECRET}
    faq = tmp_path / "faq.ndjson"
    faq.write_bytes(ndjson(ROWS))
    async with served(env, ROOT):
        code, out, err = await kb_cli(cli_env, "import", str(faq), "--source", "crm", "--watermark", "2026-12-06")
        assert code == 0, out + err
        assert "into crm (incremental): done" in out
        assert "created 4, updated 0, unchanged 0, archived 0, deleted 0, failed 0" in out
        first_id = out.split("import #")[1].split()[0]

        # The same run retried (a timeout, a restart): the same job answers, nothing runs twice.
        code, out, err = await kb_cli(cli_env, "import", str(faq), "--source", "crm", "--watermark", "2026-12-06")
        assert code == 0, out + err
        assert f"import #{first_id} " in out and "replayed" in out and "created 4" in out
        # The next night, the same content: a new job, every row unchanged.
        code, out, err = await kb_cli(cli_env, "import", str(faq), "--source", "crm", "--watermark", "2026-12-07")
        assert code == 0, out + err
        assert f"import #{first_id} " not in out
        assert "created 0, updated 0, unchanged 4, archived 0, deleted 0, failed 0" in out
        source = (await importer.client.get("/api/v1/sync-sources/crm", headers=importer.manager.headers)).json()
        assert source["watermark"] == "2026-12-07"

        bad = tmp_path / "bad.ndjson"
        bad.write_bytes(
            ndjson(
                [
                    {**ROWS[2], "title": "信用卡丢失如何挂失"},
                    {"external_id": "CRM-3003", "title": "话费查询", "attr.region": "火星"},
                ]
            )
        )
        code, out, err = await kb_cli(cli_env, "import", str(bad), "--source", "crm", "--quiet")
        assert code == 1, out + err
        assert "updated 1, unchanged 0, archived 0, deleted 0, failed 1" in out
        assert "row 2 CRM-3003 attr.region: invalid_attribute:" in out

        # Exported through the CLI (4 items > 3: the server makes it a job) equals the API's export.
        csv_out = tmp_path / "crm.csv"
        code, out, err = await kb_cli(cli_env, "export", "--source", "crm", "--format", "csv", "--out", str(csv_out))
        assert code == 0, out + err
        assert f"exported 4 items of crm to {csv_out}" in out
        api = await importer.client.get(
            "/api/v1/exports", params={"source": "crm", "format": "csv"}, headers=importer.manager.headers
        )
        assert api.status_code == 200 and csv_out.read_bytes() == api.content
        assert "信用卡丢失如何挂失" in api.content.decode("utf-8-sig")

        # A full sync that would archive 3 of 4 stops (exit 3) until confirmed.
        one = tmp_path / "one.ndjson"
        one.write_bytes(ndjson(ROWS[:1]))
        code, out, err = await kb_cli(cli_env, "import", str(one), "--source", "crm", "--mode", "full")
        assert code == 3, out + err
        assert "needs_confirmation" in out and "--confirm-mass-archive" in out
        code, out, err = await kb_cli(
            cli_env, "import", str(one), "--source", "crm", "--mode", "full", "--confirm-mass-archive"
        )
        assert code == 0, out + err
        assert "unchanged 1, archived 3" in out
        assert all(f"archived {r['external_id']}" in out for r in ROWS[1:])
        async with importer.app.state.sessionmaker() as s:
            states = dict((await s.execute(select(Item.external_id, Item.status))).all())
        assert states == {
            "CRM-1001": "published",
            "CRM-1002": "archived",
            "CRM-1003": "archived",
            "CRM-1004": "archived",
        }

        # One item left: an inline export.
        nd_out = tmp_path / "crm.ndjson"
        code, out, err = await kb_cli(cli_env, "export", "--source", "crm", "--out", str(nd_out))
        assert code == 0, out + err
        api = await importer.client.get("/api/v1/exports", params={"source": "crm"}, headers=importer.manager.headers)
        assert nd_out.read_bytes() == api.content and api.content.count(b"\n") == 1

        # Refused: a wrong secret, a source the client may not write.
        code, out, err = await kb_cli(
            {**cli_env, "KB_CLIENT_SECRET": "wrong-secret"}, "import", str(faq), "--source", "crm"
        )
        assert code == 2 and "401 invalid_client" in out, out + err
        code, out, err = await kb_cli(cli_env, "export", "--source", "tariffs", "--out", str(tmp_path / "t.ndjson"))
        assert code == 2 and "unknown_source" in out, out + err
        assert not (tmp_path / "t.ndjson").exists() and not (tmp_path / "t.ndjson.part").exists()
