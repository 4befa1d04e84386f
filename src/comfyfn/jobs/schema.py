"""The job store's tables, record types and row conversions (SQLAlchemy Core).

See :mod:`comfyfn.jobs.store` for the schema's meaning and the claim protocol.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

__all__ = [
    "JSON_FIELDS",
    "MAX_PRIORITY",
    "PREFIX_LEN",
    "STATES",
    "TERMINAL",
    "UPDATABLE",
    "Claim",
    "FileRecord",
    "JobRecord",
    "KeyRecord",
    "NewFile",
    "StaleClaim",
    "WorkerRecord",
]

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
PREFIX_LEN = 8  #: characters of a key kept for lookup
MAX_PRIORITY = 100  #: the highest priority a job can have (the lowest is its negative)


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    rate: str
    created_at: float
    revoked: bool
    max_priority: int = 0  #: the highest priority this key's jobs may ask for


@dataclass(frozen=True)
class JobRecord:
    id: str
    key_id: str
    workflow: str
    params: dict[str, Any]
    state: str  # queued | running | succeeded | failed | cancelled
    server: str | None
    prompt_id: str | None
    progress: float
    error: dict[str, Any] | None
    outputs: list[str]  # file ids
    webhook: str | None
    idempotency_key: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    claimed_by: str | None
    heartbeat_at: float | None
    cancel_requested: bool
    attempts: int = 0  #: submissions to a ComfyUI server so far (moves after server failures)
    priority: int = 0  #: higher is claimed (and placed on a server) first
    claims: int = 0  #: times the job was claimed: with ``claimed_by``, the claim a worker holds
    models: str | None = None  #: its model set's digest (:func:`models_key`), for placement
    #: seconds its server spent executing it (not queued there), once it succeeded
    executed: float | None = None
    #: seconds from its last submission (or re-attach) to its outputs in hand, once it
    #: succeeded (their storing not included)
    turnaround: float | None = None

    @property
    def claim(self) -> Claim | None:
        """The claim on the job as this record saw it (None if no worker holds it)."""
        return Claim(self.claimed_by, self.claims) if self.claimed_by else None


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a job: its name and the job's claim counter when it claimed it.
    A takeover increments the counter, so the stale holder's writes match no row."""

    worker: str
    number: int


class StaleClaim(Exception):
    """A write named a claim the job no longer has (another worker took it over): nothing
    was changed; the writer should drop the job quietly."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} is no longer held by this claim")
        self.job_id = job_id


@dataclass(frozen=True)
class WorkerRecord:
    """A runner as it registered itself (:meth:`Store.register_worker`)."""

    name: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    free_slots: int
    #: per server: {"url", "models": [file names], "in_flight"}
    servers: list[dict[str, Any]]
    running: int = 0  #: jobs it holds now (from cfn_jobs)


@dataclass(frozen=True)
class FileRecord:
    id: str
    job_id: str
    path: str
    content_type: str
    size: int
    etag: str
    created_at: float


@dataclass(frozen=True)
class NewFile:
    """An output file written to storage, to be recorded (:meth:`Store.complete_job`)."""

    path: str
    content_type: str
    size: int
    etag: str


metadata = sa.MetaData()

meta_t = sa.Table(
    "cfn_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

keys_t = sa.Table(
    "cfn_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(PREFIX_LEN), nullable=False, index=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("rate", sa.String(40), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("max_priority", sa.Integer, nullable=False, default=0, server_default="0"),
)
sa.Index(
    "cfn_keys_active_name",
    keys_t.c.name,
    unique=True,
    sqlite_where=keys_t.c.revoked == sa.false(),
    postgresql_where=keys_t.c.revoked == sa.false(),
)

jobs_t = sa.Table(
    "cfn_jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("key_id", sa.String(40), nullable=False),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("server", sa.Text),
    sa.Column("prompt_id", sa.String(100)),
    sa.Column("progress", sa.Double, nullable=False, default=0.0),
    sa.Column("error", sa.Text),
    sa.Column("outputs", sa.Text, nullable=False),
    sa.Column("webhook", sa.Text),
    sa.Column("idempotency_key", sa.String(255)),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("heartbeat_at", sa.Double),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("priority", sa.Integer, nullable=False, default=0, server_default="0"),
    # revision 0002: fencing, model-aware claims, and room for phase 2 (batch rows)
    sa.Column("claims", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("models", sa.String(64)),
    sa.Column("batch", sa.String(200)),  #: a named batch the job is a row of
    sa.Column("target", sa.Text),  #: where its owner wants the outputs (a batch row's)
    sa.Column("row_key", sa.String(255)),  #: the row's key within its batch
    # revision 0004: run times, for a batch's report
    sa.Column("executed", sa.Double),
    sa.Column("turnaround", sa.Double),
    sa.UniqueConstraint("key_id", "idempotency_key", name="cfn_jobs_idempotency"),
    sa.Index("cfn_jobs_queue", "state", "created_at"),
    sa.Index("cfn_jobs_heartbeat", "state", "heartbeat_at"),
    sa.Index("cfn_jobs_key", "key_id", "created_at"),
    sa.Index("cfn_jobs_batch", "batch", "state", "finished_at"),  # revision 0003
)

files_t = sa.Table(
    "cfn_files",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column(
        "job_id",
        sa.String(40),
        sa.ForeignKey("cfn_jobs.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("etag", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

#: the queue alone (finished jobs left out): what a claim reads, however long the history
QUEUED_INDEX = sa.Index(
    "cfn_jobs_queued",
    jobs_t.c.priority,
    jobs_t.c.created_at,
    postgresql_where=jobs_t.c.state == "queued",
    sqlite_where=jobs_t.c.state == "queued",
)

workers_t = sa.Table(
    "cfn_workers",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("heartbeat_at", sa.Double, nullable=False),
    sa.Column("free_slots", sa.Integer, nullable=False),
    sa.Column("servers", sa.Text, nullable=False),  # JSON
)

JSON_FIELDS = {"params", "error", "outputs"}
UPDATABLE = {f.name for f in fields(JobRecord)} - {
    "id",
    "key_id",
    "created_at",
    "updated_at",
    "claims",
}


def models_key(models: Iterable[tuple[str, str]]) -> str | None:
    """A model set ((folder, name) pairs) as a short digest, the same on every machine;
    None for no models."""
    ordered = sorted(models)
    if not ordered:
        return None
    return hashlib.sha256(json.dumps(ordered).encode()).hexdigest()[:32]


def _new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _key(row: Any) -> KeyRecord:
    m = row._mapping
    return KeyRecord(
        id=m["id"],
        name=m["name"],
        prefix=m["prefix"],
        rate=m["rate"],
        created_at=float(m["created_at"]),
        revoked=bool(m["revoked"]),
        max_priority=int(m["max_priority"] or 0),
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _job(row: Any) -> JobRecord:
    m = row._mapping
    return JobRecord(
        id=m["id"],
        key_id=m["key_id"],
        workflow=m["workflow"],
        params=json.loads(m["params"]),
        state=m["state"],
        server=m["server"],
        prompt_id=m["prompt_id"],
        progress=float(m["progress"]),
        error=None if m["error"] is None else json.loads(m["error"]),
        outputs=json.loads(m["outputs"]),
        webhook=m["webhook"],
        idempotency_key=m["idempotency_key"],
        created_at=float(m["created_at"]),
        updated_at=float(m["updated_at"]),
        started_at=_opt_float(m["started_at"]),
        finished_at=_opt_float(m["finished_at"]),
        claimed_by=m["claimed_by"],
        heartbeat_at=_opt_float(m["heartbeat_at"]),
        cancel_requested=bool(m["cancel_requested"]),
        attempts=int(m["attempts"] or 0),
        priority=int(m["priority"] or 0),
        claims=int(m["claims"] or 0),
        models=m["models"],
        executed=_opt_float(m["executed"]),
        turnaround=_opt_float(m["turnaround"]),
    )


def _worker(row: Any, running: int = 0) -> WorkerRecord:
    m = row._mapping
    return WorkerRecord(
        name=m["name"],
        host=m["host"],
        pid=int(m["pid"]),
        started_at=float(m["started_at"]),
        heartbeat_at=float(m["heartbeat_at"]),
        free_slots=int(m["free_slots"]),
        servers=json.loads(m["servers"]),
        running=running,
    )


def _file(row: Any) -> FileRecord:
    m = row._mapping
    return FileRecord(
        id=m["id"],
        job_id=m["job_id"],
        path=m["path"],
        content_type=m["content_type"],
        size=int(m["size"]),
        etag=m["etag"],
        created_at=float(m["created_at"]),
    )
