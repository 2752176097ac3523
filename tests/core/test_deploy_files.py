"""The scaled deployment files. Docker cannot run here: these check the files' content, and
`docker compose config -q` validates the compose file wherever the compose plugin exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_part_with_health_checks() -> None:
    services = compose()["services"]
    assert {"postgres", "elasticsearch", "tika", "minio", "api", "worker", "migrate"} <= set(services)
    for name in ("postgres", "elasticsearch", "tika", "minio", "api"):
        assert services[name].get("healthcheck"), f"{name} has no health check"
    assert (ROOT / services["elasticsearch"]["build"] / "Dockerfile").exists()
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_settings_are_real_settings() -> None:
    env = compose()["x-app-env"]
    fields = {f"KB_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    assert env["KB_SEARCH_BACKEND"] == "elasticsearch" and env["KB_ENV"] == "prod"
    assert env["KB_TIKA_URL"].startswith("http://tika:")
    # attachments in the MinIO service, not on one host's volume; API and workers wait for it
    assert env["KB_BLOB_BACKEND"] == "s3" and env["KB_S3_ENDPOINT_URL"].startswith("http://minio:")
    assert env["KB_S3_BUCKET"] and env["KB_S3_CREATE_BUCKET"] == "true"
    services = compose()["services"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["minio"]["condition"] == "service_healthy"
    literal = {k[3:].lower(): v for k, v in env.items() if "${" not in str(v)}
    s3 = Settings(_env_file=None, **{**literal, "jwt_secret": "k" * 40})  # the values are valid settings
    assert (s3.blob_backend, s3.s3_create_bucket) == ("s3", True)


def test_prod_refuses_the_default_secret() -> None:
    with pytest.raises(ValueError, match="KB_JWT_SECRET"):
        Settings(_env_file=None, env="prod")
    Settings(_env_file=None, env="prod", jwt_secret="k" * 40)


def test_dockerfile_is_multi_stage_and_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2 and "USER kb" in text and "HEALTHCHECK" in text


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(
    not _compose_available(),
    reason="needs the docker compose plugin; this machine has "
    "only the docker client without it, so the structural tests above stand in",
)
def test_docker_compose_config_is_valid() -> None:
    r = subprocess.run(
        ["docker", "compose", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"KB_JWT_SECRET": "x" * 40, "KB_BOOTSTRAP_ADMIN_PASSWORD": "secret-password", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
