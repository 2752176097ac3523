from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


async def test_exported_openapi_matches_the_app(app: Any) -> None:
    """Run `make openapi` (python -m app export-openapi) after changing the API."""
    exported = json.loads((ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8"))
    served = json.loads(json.dumps(app.openapi(), ensure_ascii=False, sort_keys=True))
    assert exported == served, "openapi/openapi.json is stale: run `make openapi`"
