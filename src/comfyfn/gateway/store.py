"""The gateway's job store: API keys, jobs, output files and one persistent secret.

SQLAlchemy 2 Core (no ORM) on a synchronous engine, so one code path serves

* **SQLite** (the embedded default: ``sqlite:///path/to/gateway.db``), opened in WAL mode with a
  busy timeout, usable from any thread (``check_same_thread=False``); every write transaction is
  ``BEGIN IMMEDIATE`` so that writers queue on the database lock up front instead of failing
  with "database is locked" when they upgrade a read to a write; and
* **PostgreSQL** (``postgresql+psycopg://user@host/db``, psycopg 3), which several gateway
  replicas share.

Schema (created on first use; ``cfn_`` prefixed so the tables can live in a shared database;
times are float epoch seconds from the writing process's clock, so replicas need NTP-synced
clocks, and ``stale_after`` should be well above any skew)::

    cfn_meta   key PK, value                      -- "secret" (hex), "schema_version"
    cfn_keys   id PK "key_…", name, prefix, hash, rate, created_at, revoked
               index(prefix); unique(name) WHERE NOT revoked
    cfn_jobs   id PK "job_…", key_id, workflow, params (JSON text), state, server, prompt_id,
               progress, error (JSON text), outputs (JSON text: file ids), webhook,
               idempotency_key, created_at, updated_at, started_at, finished_at,
               claimed_by, heartbeat_at, cancel_requested, attempts
               unique(key_id, idempotency_key)   -- NULLs never collide
               index(state, created_at), index(state, heartbeat_at), index(key_id, created_at)
    cfn_files  id PK "file_…", job_id → cfn_jobs.id, path, content_type, size, etag, created_at

API keys: the secret (``"cfn_" + token_urlsafe(32)``) is returned once by :meth:`Store.create_key`
and never stored; the row holds ``sha256(secret)`` (hex) and the secret's first 8 characters
(``prefix``, an index for lookup and something to show in listings). :meth:`Store.find_key`
fetches the rows with that prefix and compares the hashes with :func:`hmac.compare_digest`.

Claim protocol (how workers of one or several replicas share the queue):

1. :meth:`Store.claim_job` runs one write transaction that picks the oldest ``queued`` job or,
   failing that, the ``running`` job with the oldest ``heartbeat_at`` older than ``stale_after``
   seconds (its replica died), and sets ``state='running'``, ``claimed_by=worker``,
   ``heartbeat_at=now``, ``started_at`` (if unset). On PostgreSQL the pick is
   ``SELECT … FOR UPDATE SKIP LOCKED``: concurrent claimers skip rows another transaction holds,
   and a row changed by a claimer that committed meanwhile is re-checked against the WHERE
   clause, so no two claimers get the same job. On SQLite ``BEGIN IMMEDIATE`` serialises the
   whole pick-and-update against every other writer. The UPDATE repeats the state condition
   as a last guard.
2. The worker calls :meth:`Store.heartbeat` every few seconds (well under ``stale_after``) for
   all the jobs it holds, and :meth:`Store.update_job` with progress and the final state.
3. A taken-over job keeps ``server`` and ``prompt_id``: the new worker re-attaches to the prompt
   already queued on that ComfyUI server instead of submitting it twice. The same holds for a
   job handed back by :meth:`Store.release_job` (graceful shutdown). A worker that lost a job
   (``claimed_by`` is no longer its own) should stop writing to it.
4. :meth:`Store.request_cancel` only sets ``cancel_requested``; the worker that claims or holds
   the job sees it and finishes the job as ``cancelled`` (a cancelled queued job is still handed
   out by :meth:`Store.claim_job`, so that one place finishes it and sends its webhook).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from comfyfn.gateway.schema import (
    JSON_FIELDS,
    PREFIX_LEN,
    STATES,
    TERMINAL,
    UPDATABLE,
    FileRecord,
    JobRecord,
    KeyRecord,
    _file,
    _hash,
    _job,
    _key,
    _new_id,
    files_t,
    jobs_t,
    keys_t,
    meta_t,
    metadata,
)

__all__ = ["STATES", "TERMINAL", "FileRecord", "JobRecord", "KeyRecord", "Store"]

SCHEMA_VERSION = "1"
SQLITE_BUSY_TIMEOUT = 30.0  #: seconds a SQLite writer waits for the database lock by default
_PG_INIT_LOCK = 0x63666E5F73746F72  # pg_advisory_xact_lock key for schema creation ("cfn_stor")


class Store:
    """The job store on ``url`` (a SQLAlchemy URL; see the module docstring).

    Thread-safe: every method runs in its own short transaction on a pooled connection.
    ``busy_timeout`` (SQLite only): seconds a statement waits for another writer's lock
    before it fails with ``sqlalchemy.exc.OperationalError`` ("database is locked").
    """

    def __init__(self, url: str, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> None:
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout {busy_timeout} is negative")
        self.busy_timeout = busy_timeout
        parsed = make_url(url)
        if parsed.drivername in ("postgresql", "postgres"):  # plain URLs mean psycopg 3 here
            parsed = parsed.set(drivername="postgresql+psycopg")
            url = parsed.render_as_string(hide_password=False)
        self.url = url
        self.dialect = parsed.get_backend_name()
        self._secret: bytes | None = None
        # One writer at a time per process on SQLite (the file lock serialises writers anyway;
        # this spares in-process threads SQLite's sleep-and-retry busy handler). For an
        # in-memory database, which is one shared connection, it guards every statement.
        self._write_lock: contextlib.AbstractContextManager = contextlib.nullcontext()
        self._read_lock: contextlib.AbstractContextManager = contextlib.nullcontext()
        if self.dialect == "sqlite":
            self._engine = self._sqlite_engine(url, parsed.database)
        else:
            self._engine = sa.create_engine(url, pool_pre_ping=True)
        self._create_schema()

    # -- engine set-up -------------------------------------------------------------------------

    def _sqlite_engine(self, url: str, database: str | None) -> Engine:
        memory = not database or database == ":memory:" or "mode=memory" in url
        kwargs: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": self.busy_timeout},
        }
        lock = threading.RLock()
        self._write_lock = lock
        if memory:
            kwargs["poolclass"] = StaticPool
            self._read_lock = lock
        engine = sa.create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            # Hand transaction control to SQLAlchemy (the "begin" hook below) instead of the
            # sqlite3 module's implicit BEGINs.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                if not memory:
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute(f"PRAGMA busy_timeout={round(self.busy_timeout * 1000)}")
                cur.execute("PRAGMA foreign_keys=ON")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - exercised by every test
            write = conn.get_execution_options().get("cfn_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: ``BEGIN IMMEDIATE``), committed on success."""
        with self._write_lock, self._engine.connect() as conn:
            conn.execution_options(cfn_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._read_lock, self._engine.connect() as conn, conn.begin():
            yield conn

    def _create_schema(self) -> None:
        with self._write() as conn:
            if self.dialect == "postgresql":
                # replicas starting together must not race on CREATE TABLE
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_INIT_LOCK)))
            metadata.create_all(conn, checkfirst=True)
            columns = {c["name"] for c in sa.inspect(conn).get_columns("cfn_jobs")}
            if "attempts" not in columns:  # a database made before the column existed
                conn.exec_driver_sql(
                    "ALTER TABLE cfn_jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"
                )
            have = conn.execute(
                sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")
            ).scalar()
            if have is None:
                conn.execute(sa.insert(meta_t).values(key="schema_version", value=SCHEMA_VERSION))

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API keys ------------------------------------------------------------------------------

    def create_key(self, name: str, rate: str = "60/min") -> tuple[str, KeyRecord]:
        """A new key: (its secret, shown only now; its record). Names of live keys are unique."""
        from comfyfn.gateway.security import parse_rate

        if not name or not name.strip():
            raise ValueError("a key needs a name")
        parse_rate(rate)  # ValueError with a readable message
        secret = "cfn_" + secrets.token_urlsafe(32)
        record = KeyRecord(
            id=_new_id("key"),
            name=name,
            prefix=secret[:PREFIX_LEN],
            rate=rate,
            created_at=time.time(),
            revoked=False,
        )
        taken = ValueError(f"an active key named {name!r} exists already (revoke it first)")
        try:
            with self._write() as conn:
                exists = conn.execute(
                    sa.select(keys_t.c.id).where(
                        keys_t.c.name == name, keys_t.c.revoked == sa.false()
                    )
                ).first()
                if exists:
                    raise taken
                conn.execute(
                    sa.insert(keys_t).values(
                        id=record.id,
                        name=record.name,
                        prefix=record.prefix,
                        hash=_hash(secret),
                        rate=record.rate,
                        created_at=record.created_at,
                        revoked=False,
                    )
                )
        except IntegrityError as e:  # a concurrent create_key with the same name won
            raise taken from e
        return secret, record

    def find_key(self, secret: str) -> KeyRecord | None:
        """The live key whose secret this is, else None (hashes compared in constant time)."""
        if not isinstance(secret, str) or not secret:
            return None
        digest = _hash(secret)
        with self._read() as conn:
            rows = conn.execute(
                sa.select(keys_t).where(
                    keys_t.c.prefix == secret[:PREFIX_LEN], keys_t.c.revoked == sa.false()
                )
            ).all()
        found = None
        for row in rows:
            if hmac.compare_digest(row._mapping["hash"], digest):
                found = row
        if not rows:  # the same work whether or not the prefix exists
            hmac.compare_digest(digest, _hash("cfn_" + "0" * 43))
        return _key(found) if found is not None else None

    def list_keys(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(keys_t).order_by(keys_t.c.created_at, keys_t.c.id))
            return [_key(r) for r in rows]

    def revoke_key(self, name_or_id: str) -> bool:
        """Revoke the live key with this id or name; False if there is none."""
        with self._write() as conn:
            result = conn.execute(
                sa.update(keys_t)
                .where(
                    sa.or_(keys_t.c.id == name_or_id, keys_t.c.name == name_or_id),
                    keys_t.c.revoked == sa.false(),
                )
                .values(revoked=True)
            )
            return result.rowcount > 0

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(
        self,
        *,
        key_id: str,
        workflow: str,
        params: dict,
        webhook: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """A new queued job, or with an idempotency key this key_id used before: (that job, False).

        Race-safe: the (key_id, idempotency_key) pair is a unique constraint, and the loser of
        a concurrent insert reads the winner's job.
        """
        now = time.time()
        values = {
            "id": _new_id("job"),
            "key_id": key_id,
            "workflow": workflow,
            "params": json.dumps(params),
            "state": "queued",
            "server": None,
            "prompt_id": None,
            "progress": 0.0,
            "error": None,
            "outputs": "[]",
            "webhook": webhook,
            "idempotency_key": idempotency_key,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
            "claimed_by": None,
            "heartbeat_at": None,
            "cancel_requested": False,
            "attempts": 0,
        }
        same = sa.select(jobs_t).where(
            jobs_t.c.key_id == key_id, jobs_t.c.idempotency_key == idempotency_key
        )
        try:
            with self._write() as conn:
                if idempotency_key is not None:
                    row = conn.execute(same).first()
                    if row is not None:
                        return _job(row), False
                conn.execute(sa.insert(jobs_t).values(**values))
                row = conn.execute(sa.select(jobs_t).where(jobs_t.c.id == values["id"])).one()
                return _job(row), True
        except IntegrityError:
            if idempotency_key is None:
                raise
            with self._read() as conn:
                row = conn.execute(same).first()
            if row is None:
                raise
            return _job(row), False

    def get_job(self, job_id: str, key_id: str | None = None) -> JobRecord | None:
        """The job, or None; with ``key_id`` only if it is that key's job."""
        query = sa.select(jobs_t).where(jobs_t.c.id == job_id)
        if key_id is not None:
            query = query.where(jobs_t.c.key_id == key_id)
        with self._read() as conn:
            row = conn.execute(query).first()
        return _job(row) if row is not None else None

    def claim_job(self, worker: str, *, stale_after: float = 30.0) -> JobRecord | None:
        """Take the oldest queued job, else a running job whose heartbeat is stale; or None.

        See the module docstring for why two claimers never get the same job.
        """
        with self._write() as conn:
            now = time.time()
            queued = jobs_t.c.state == "queued"
            job_id = conn.execute(
                sa.select(jobs_t.c.id)
                .where(queued)
                .order_by(jobs_t.c.created_at, jobs_t.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar()
            condition = queued
            if job_id is None:
                condition = sa.and_(
                    jobs_t.c.state == "running",
                    sa.or_(
                        jobs_t.c.heartbeat_at.is_(None),
                        jobs_t.c.heartbeat_at < now - stale_after,
                    ),
                )
                job_id = conn.execute(
                    sa.select(jobs_t.c.id)
                    .where(condition)
                    .order_by(jobs_t.c.heartbeat_at, jobs_t.c.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).scalar()
                if job_id is None:
                    return None
            done = conn.execute(
                sa.update(jobs_t)
                .where(jobs_t.c.id == job_id, condition)
                .values(
                    state="running",
                    claimed_by=worker,
                    heartbeat_at=now,
                    updated_at=now,
                    started_at=sa.func.coalesce(jobs_t.c.started_at, now),
                )
            )
            if done.rowcount != 1:  # cannot happen while the row is locked; never hand it out
                return None
            return _job(conn.execute(sa.select(jobs_t).where(jobs_t.c.id == job_id)).one())

    def heartbeat(self, worker: str) -> None:
        """Mark every running job this worker holds as alive (heartbeat_at = now)."""
        with self._write() as conn:
            conn.execute(
                sa.update(jobs_t)
                .where(jobs_t.c.state == "running", jobs_t.c.claimed_by == worker)
                .values(heartbeat_at=time.time())
            )

    def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        """Set fields of a job (any but id/key_id/created_at/updated_at); returns the new record.

        ``updated_at`` becomes now; ``finished_at`` becomes now when the state changes to a
        terminal one (unless given); ``started_at`` becomes now when the state changes to
        ``running`` and it was unset. ``KeyError`` if there is no such job.
        """
        unknown = set(fields) - UPDATABLE
        if unknown:
            raise TypeError(f"update_job cannot set {', '.join(sorted(unknown))}")
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"state {fields['state']!r} is not one of {', '.join(STATES)}")
        now = time.time()
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if name == "outputs":
                value = json.dumps(list(value))
            elif name in JSON_FIELDS:
                value = None if value is None else json.dumps(value)
            values[name] = value
        values["updated_at"] = now
        state = fields.get("state")
        if state in TERMINAL and "finished_at" not in fields:
            # SET expressions see the row as it was: keep finished_at if it already ended so
            values["finished_at"] = sa.case(
                (jobs_t.c.state.in_(sorted(TERMINAL)), jobs_t.c.finished_at), else_=now
            )
        if state == "running" and "started_at" not in fields:
            values["started_at"] = sa.func.coalesce(jobs_t.c.started_at, now)
        with self._write() as conn:
            done = conn.execute(sa.update(jobs_t).where(jobs_t.c.id == job_id).values(**values))
            if done.rowcount != 1:
                raise KeyError(job_id)
            return _job(conn.execute(sa.select(jobs_t).where(jobs_t.c.id == job_id)).one())

    def release_job(self, job_id: str) -> None:
        """Hand a running job back to the queue (server/prompt_id kept for re-attaching)."""
        with self._write() as conn:
            conn.execute(
                sa.update(jobs_t)
                .where(jobs_t.c.id == job_id, jobs_t.c.state == "running")
                .values(state="queued", claimed_by=None, heartbeat_at=None, updated_at=time.time())
            )

    def request_cancel(self, job_id: str) -> None:
        """Ask for a queued or running job to be cancelled (its worker does it)."""
        with self._write() as conn:
            conn.execute(
                sa.update(jobs_t)
                .where(jobs_t.c.id == job_id, jobs_t.c.state.in_(("queued", "running")))
                .values(cancel_requested=True, updated_at=time.time())
            )

    def cancel_if_queued(self, job_id: str) -> bool:
        """Cancel a job that no worker has claimed yet (atomic: never one being claimed)."""
        now = time.time()
        error = json.dumps({"type": "cancelled", "message": "removed from the queue"})
        with self._write() as conn:
            result = conn.execute(
                sa.update(jobs_t)
                .where(jobs_t.c.id == job_id, jobs_t.c.state == "queued")
                .values(
                    state="cancelled",
                    cancel_requested=True,
                    error=error,
                    updated_at=now,
                    finished_at=now,
                )
            )
        return result.rowcount == 1

    def queue_depth(self) -> dict[str, int]:
        """Number of jobs in each state (every state present, 0 if none)."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(jobs_t.c.state, sa.func.count()).group_by(jobs_t.c.state)
            ).all()
        depth = dict.fromkeys(STATES, 0)
        depth.update({state: int(n) for state, n in rows})
        return depth

    def queue_position(self, job_id: str) -> int | None:
        """How many queued jobs will be claimed before this one (0: it is next), or None if
        it is not queued. Claim order: oldest ``created_at`` first, then ``id``."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(jobs_t.c.created_at, jobs_t.c.id).where(
                    jobs_t.c.id == job_id, jobs_t.c.state == "queued"
                )
            ).first()
            if row is None:
                return None
            created, ident = row
            ahead = conn.execute(
                sa.select(sa.func.count())
                .select_from(jobs_t)
                .where(
                    jobs_t.c.state == "queued",
                    sa.or_(
                        jobs_t.c.created_at < created,
                        sa.and_(jobs_t.c.created_at == created, jobs_t.c.id < ident),
                    ),
                )
            ).scalar()
        return int(ahead or 0)

    # -- files ---------------------------------------------------------------------------------

    def add_file(
        self, *, job_id: str, path: str, content_type: str, size: int, etag: str
    ) -> FileRecord:
        record = FileRecord(
            id=_new_id("file"),
            job_id=job_id,
            path=path,
            content_type=content_type,
            size=int(size),
            etag=etag,
            created_at=time.time(),
        )
        with self._write() as conn:
            conn.execute(sa.insert(files_t).values(**record.__dict__))
        return record

    def get_file(self, file_id: str) -> FileRecord | None:
        with self._read() as conn:
            row = conn.execute(sa.select(files_t).where(files_t.c.id == file_id)).first()
        return _file(row) if row is not None else None

    # -- the signing secret --------------------------------------------------------------------

    def secret(self) -> bytes:
        """32 random bytes made on first use and kept in the database (shared by replicas)."""
        if self._secret is not None:
            return self._secret
        query = sa.select(meta_t.c.value).where(meta_t.c.key == "secret")
        with self._read() as conn:
            value = conn.execute(query).scalar()
        if value is None:
            try:
                with self._write() as conn:
                    value = conn.execute(query).scalar()
                    if value is None:
                        value = secrets.token_hex(32)
                        conn.execute(sa.insert(meta_t).values(key="secret", value=value))
            except IntegrityError:  # another replica made it first
                with self._read() as conn:
                    value = conn.execute(query).scalar()
        self._secret = bytes.fromhex(value)
        return self._secret
