"""modhub's settings, read from `MODHUB_*` environment variables and checked at load."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modhub.errors import ConfigurationError

KEY_FILE = "secret.key"


class Settings(BaseSettings):
    """Everything an operator can set; see the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="MODHUB_", extra="ignore")

    data_dir: Path = Path(".modhub")
    database_url: str | None = None
    secret_key: str | None = Field(default=None, repr=False)
    admin_password: str | None = Field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=1, le=65535)
    access_token_ttl: int = Field(default=3600, ge=60, le=7 * 86400)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description=(
            "On SIGTERM, how long requests, job runs and event deliveries in flight may take"
            " to finish"
        ),
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json: one JSON object a line"
    )
    login_max_failures: int = Field(default=5, ge=1)
    login_lockout_seconds: int = Field(default=60, ge=1)
    pip_index_url: str | None = None
    pip_find_links: list[str] = []
    pip_offline: bool = False
    pip_allow_source_builds: bool = Field(
        default=False, description="Let installs build source packages (in the sandbox)"
    )
    pip_allow_direct_references: bool = Field(
        default=False,
        description="Accept `x @ https://…` and VCS requirements in manifests (never local paths)",
    )
    max_module_memory_mb: int = Field(default=1024, ge=32, le=65_536)
    max_module_timeout_ms: int = Field(default=300_000, ge=1, le=600_000)
    max_module_concurrency: int = Field(default=64, ge=1, le=1_000)
    max_module_storage_mb: int = Field(default=1024, ge=1, le=65_536)
    max_workers: int = Field(default=64, ge=1, le=10_000)
    worker_idle_seconds: float = Field(default=300.0, gt=0)
    job_concurrency: int = Field(default=8, ge=1, le=1000)
    job_concurrency_per_module: int = Field(default=2, ge=1, le=100)
    job_retention_days: float = Field(default=30, gt=0)
    scheduler: bool = Field(default=True, description="Fire and execute jobs in this process")
    event_retention_hours: float = Field(
        default=72, gt=0, description="Events (and their deliveries) older than this are deleted"
    )
    event_dispatch: bool = Field(default=True, description="Deliver events in this process")
    event_lease_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="How long a delivery claimed by a node that stopped renewing waits",
    )
    prefetch: bool = Field(
        default=False,
        description="Materialize every enabled module at start-up and after each change",
    )
    operation_wait_seconds: float = Field(default=10.0, ge=0, le=300)
    node_heartbeat_seconds: float = Field(
        default=5.0, ge=0.1, le=3600, description="How often a node renews its cluster_nodes row"
    )
    listen_changes: bool = Field(
        default=True,
        description="On PostgreSQL, hear other nodes' registry changes at once (LISTEN/NOTIFY)",
    )
    sync_poll_seconds: float = Field(
        default=1.0,
        ge=0.05,
        le=86_400,
        description="How often a node checks for registry changes it was not notified of",
    )
    metrics: bool = Field(
        default=True, description="Record and serve Prometheus metrics (MODHUB_METRICS=off: not)"
    )
    metrics_address: str | None = Field(
        default=None,
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$",
        description="Also serve /metrics, without a token, on this host:port (e.g. loopback)",
    )
    failpoint: str | None = Field(
        default=None, description="Stop lifecycle operations at this step (crash tests)"
    )
    module_log_lines: int = Field(
        default=10_000,
        ge=100,
        le=1_000_000,
        description="Lines of each module's log kept in the database, from every node",
    )
    module_log_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=64 * 1024,
        le=1024 * 1024 * 1024,
        description="Bytes of each module's log kept in the database, from every node",
    )

    testing: bool = Field(
        default=False, description="TEST ONLY: allow the test-only settings (never in production)"
    )
    test_clock: Path | None = Field(
        default=None,
        description="TEST ONLY (with MODHUB_TESTING): a file whose time the job scheduler "
        "uses instead of the real one (cluster/clock.py)",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @model_validator(mode="after")
    def _test_only(self) -> Settings:
        if self.test_clock is not None and not self.testing:
            raise ValueError(
                "test_clock: MODHUB_TEST_CLOCK is a test-only setting, honoured only with "
                "MODHUB_TESTING=true"
            )
        return self

    @property
    def db_url(self) -> str:
        """Return the database URL: the setting, or SQLite under the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'modhub.db'}"

    @property
    def embedded(self) -> bool:
        """Return whether the database is the embedded SQLite one."""
        return self.db_url.startswith("sqlite")

    def prepare_data_dir(self) -> None:
        """Make the data dir modhub's alone: the folder 0700, the embedded database 0600.

        SQLite gives its `-wal` and `-shm` files the mode of the database file, so the
        database is created 0600 before SQLite first opens it.
        """
        from sqlalchemy.engine import make_url  # here: the CLI reads settings without SQLAlchemy

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        name = make_url(self.db_url).database if self.embedded else None
        if name and name != ":memory:":
            database = Path(name)
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
            for path in (database, *(Path(f"{database}-{x}") for x in ("wal", "shm"))):
                if path.exists():
                    path.chmod(0o600)

    def resolved_secret_key(self) -> str:
        """Return the secret key: the setting, or one generated once into the data dir."""
        if self.secret_key:
            if len(self.secret_key) < 32:
                raise ConfigurationError("MODHUB_SECRET_KEY must be at least 32 characters")
            return self.secret_key
        path = self.data_dir / KEY_FILE
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first; read theirs
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(48))
        key = path.read_text().strip()
        if len(key) < 32:
            raise ConfigurationError(f"{path} holds a key shorter than 32 characters")
        return key
