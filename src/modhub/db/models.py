"""SQLAlchemy models of everything modhub stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class Module(Base):
    """A registered module: its active version, status and configuration."""

    __tablename__ = "modules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    version: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(200))
    license: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), index=True)
    path: Mapped[str | None] = mapped_column(String(1024))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_error: Mapped[str | None] = mapped_column(Text)
    previous_version: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    versions: Mapped[list[ModuleVersion]] = relationship(
        back_populates="module", cascade="all, delete-orphan", passive_deletes=True
    )
    dependencies: Mapped[list[ModuleDependency]] = relationship(
        back_populates="module", cascade="all, delete-orphan", passive_deletes=True
    )


class ModuleVersion(Base):
    """One registered version of a module, with its manifest as submitted."""

    __tablename__ = "module_versions"
    __table_args__ = (UniqueConstraint("module_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    module_id: Mapped[int] = mapped_column(ForeignKey("modules.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(256))
    manifest: Mapped[dict[str, Any]]
    path: Mapped[str | None] = mapped_column(String(1024))
    files: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The installed code, packed, in `bundles` (any node can materialize it); None before 0006.
    bundle_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    module: Mapped[Module] = relationship(back_populates="versions")


class ModuleDependency(Base):
    """A dependency of a module's active version on another module, by npm range."""

    __tablename__ = "module_dependencies"
    __table_args__ = (UniqueConstraint("module_id", "depends_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    module_id: Mapped[int] = mapped_column(ForeignKey("modules.id", ondelete="CASCADE"))
    depends_on: Mapped[str] = mapped_column(String(64), index=True)
    version_range: Mapped[str] = mapped_column(String(256))

    module: Mapped[Module] = relationship(back_populates="dependencies")


class Role(Base):
    """A named set of permissions."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)

    permissions: Mapped[list[RolePermission]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class RolePermission(Base):
    """A permission granted to a role (`*` grants every permission)."""

    __tablename__ = "role_permissions"

    role: Mapped[str] = mapped_column(
        ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True
    )
    permission: Mapped[str] = mapped_column(String(128), primary_key=True)


class User(Base):
    """A person or script that signs in."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(ForeignKey("roles.name"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A long-lived token for scripts; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginThrottle(Base):
    """Failed logins per user name, to slow down password guessing."""

    __tablename__ = "login_throttle"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]


class AuditEntry(Base):
    """One change: who made it, what, to what, when. Never holds a secret's value."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Operation(Base):
    """A long lifecycle operation (install, upgrade, remove): its steps, log and outcome.

    A row still `running` at start-up is an operation a crash interrupted.
    """

    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    module: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class JobRun(Base):
    """One attempt of one job run. (module, job, scheduled_at, attempt) is unique, so a
    cron tick fires once however many schedulers share the database."""

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("module", "job", "scheduled_at", "attempt"),
        # The claim's order: the ready runs, oldest first, read without a sort (0009).
        Index("ix_job_runs_ready", "status", "not_before", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    module: Mapped[str] = mapped_column(String(64), index=True)
    job: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(256))
    trigger: Mapped[str] = mapped_column(String(16))
    scheduled_at: Mapped[datetime]
    not_before: Mapped[datetime]
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))  # indexed first in ix_job_runs_ready
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # The runner (`RunnerLease.owner`) executing it while `running`; None before 0004.
    owner: Mapped[str | None] = mapped_column(String(64))


class RunnerLease(Base):
    """A live job runner (one per process) and when it was last seen. The runner renews
    `seen_at` on its heartbeat; when that stops, other runners fail the runs it owns."""

    __tablename__ = "job_runners"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]


# Keys sort bytewise on both databases ("C" collation on PostgreSQL, SQLite's BINARY).
StoreKey = String(512).with_variant(String(512, collation="C"), "postgresql")


class StoredValue(Base):
    """One key of a module's store (by module name: it outlives versions)."""

    __tablename__ = "module_store"

    module: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(StoreKey, primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # compact JSON
    size: Mapped[int] = mapped_column(Integer)  # UTF-8 bytes of the key and the JSON
    version: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    updated_at: Mapped[datetime]


class StoreUsage(Base):
    """What a module's store holds, kept with every write (no sum over the store per set);
    its row is also the lock that orders one module's writes."""

    __tablename__ = "module_store_usage"

    module: Mapped[str] = mapped_column(String(64), primary_key=True)
    keys: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)  # a quota may pass 2 GiB


class ClusterMeta(Base):
    """Facts the whole cluster shares, by key (e.g. the secret key's check value)."""

    __tablename__ = "cluster_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ClusterNode(Base):
    """A modhub server process on some machine, as it last reported itself."""

    __tablename__ = "cluster_nodes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    address: Mapped[str | None] = mapped_column(String(255))  # where it listens, if known
    modhub_version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    stopped_at: Mapped[datetime | None]
    # What it reports on each heartbeat: materialized modules, live workers, runs in flight.
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_error: Mapped[str | None] = mapped_column(Text)


class Bundle(Base):
    """An installed module version's code, packed (tar.gz), content-addressed by sha256."""

    __tablename__ = "bundles"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BundleChunk(Base):
    """One piece of a bundle, in order (`seq` from 0), so no bundle is held whole in memory."""

    __tablename__ = "bundle_chunks"

    sha256: Mapped[str] = mapped_column(
        String(64), ForeignKey("bundles.sha256", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Event(Base):
    """One event a module (or the platform, source "modhub") emitted; `seq` orders one
    source's events (unique per source), `id` is the global handle."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("source", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))  # indexed by (source, seq)
    name: Mapped[str] = mapped_column(String(128), index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    emitted_at: Mapped[datetime] = mapped_column(index=True)


class EventSeq(Base):
    """A source's last event `seq`: the row an emit updates (and so locks until it commits)
    to number its event, so one source's seqs follow the order its emits commit in."""

    __tablename__ = "event_seqs"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)


class EventDelivery(Base):
    """One event for one subscribing module: pending until a node claims it (`running`,
    `claimed_by` and `lease_until`), then delivered, or dead after its last attempt.
    `source` and `seq` repeat the event's, so a subscriber's order needs no join."""

    __tablename__ = "event_deliveries"
    __table_args__ = (UniqueConstraint("event_id", "subscriber"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # indexed by (event_id, subscriber)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    subscriber: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class ModuleLogLine(Base):
    """One line of a module's output, as a node's worker printed it (`stream` "stderr") or
    modhub noted it ("modhub"). Written in batches by each node, trimmed per module to the
    `module_log_lines` and `module_log_bytes` settings; `seq` counts one node's lines."""

    __tablename__ = "module_log_lines"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    module: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    stream: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    request_id: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)  # UTF-8 bytes of `line`, with its newline
    line: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_module_log_lines_module_at", "module", "at", "id"),)
