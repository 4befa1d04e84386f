"""The store's database: a SQLAlchemy engine opened the right way for its backend.

* **SQLite** (the embedded default: ``sqlite:///path/to/gateway.db``), opened in WAL mode with a
  busy timeout, usable from any thread (``check_same_thread=False``); every write transaction is
  ``BEGIN IMMEDIATE`` so that writers queue on the database lock up front instead of failing
  with "database is locked" when they upgrade a read to a write. One writer at a time per
  process (the file lock serialises writers anyway; this spares in-process threads SQLite's
  sleep-and-retry busy handler); an in-memory database is one shared connection, guarded for
  every statement.
* **PostgreSQL** (``postgresql+psycopg://user@host/db``, a plain ``postgresql://`` URL meaning
  psycopg 3), which gateway replicas and ``comfyfn worker`` runners share.

Schema versions are Alembic revisions shipped in :mod:`comfyfn.jobs.migrations`: opening
a store upgrades its database to the newest revision this comfyfn knows, in one transaction
(PostgreSQL: under an advisory lock, so processes starting together do not race; SQLite:
``BEGIN IMMEDIATE``), the way :mod:`comfyfn._schema_versions` does it for every comfyfn
database. A database made before schema versions (its tables exist, no version table) is
brought to the baseline once (the columns added before versions, if missing) and stamped
``0001``. A database at a revision this comfyfn does not know (a newer comfyfn migrated it)
is refused with :class:`SchemaTooNew`: nothing is changed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from comfyfn import _schema_versions
from comfyfn.errors import ComfyError, SchemaTooNew

__all__ = [
    "SQLITE_BUSY_TIMEOUT",
    "Database",
    "SchemaTooNew",
    "StoreUnreachable",
    "head_revision",
    "unavailable",
]

SQLITE_BUSY_TIMEOUT = 30.0  #: seconds a SQLite writer waits for the database lock by default
_PG_INIT_LOCK = 0x63666E5F73746F72  # pg_advisory_xact_lock key for migrations ("cfn_stor")
MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "cfn_alembic_version"
#: database errors that mean "not now" (down, restarting, locked, pool exhausted)
_NOT_NOW = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


log = logging.getLogger("comfyfn.jobs")

_VERSIONS = _schema_versions.Versions(
    name="job database",
    migrations=MIGRATIONS,
    version_table=VERSION_TABLE,
    baseline="0001",
    marker="cfn_jobs",
    added_before=(  # a database made before schema versions gets them once
        ("cfn_jobs", "attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("cfn_jobs", "priority", "INTEGER NOT NULL DEFAULT 0"),
        ("cfn_keys", "max_priority", "INTEGER NOT NULL DEFAULT 0"),
    ),
    log=log,
)


class StoreUnreachable(ComfyError):
    """The job store could not be reached (or opened) when it was first opened."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where  #: host:port/database (never the password), or the SQLite file


def head_revision() -> str:
    """The newest schema revision this comfyfn knows."""
    return _schema_versions.head(_VERSIONS)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unavailable for now (an outage to report and
    retry later, not a fault of the gateway's)."""
    return isinstance(exc, _NOT_NOW) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    )


class Database:
    """The engine for ``url`` with the store's tables created; short read and write
    transactions (:meth:`read`, :meth:`write`) on pooled connections, from any thread."""

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
        self._write_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._read_lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(url, parsed.database)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        try:
            self._create_schema()
        except sa_exc.SQLAlchemyError as exc:
            self.engine.dispose()
            if not unavailable(exc):
                raise
            raise _unreachable(parsed, exc) from None

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
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
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
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("cfn_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: ``BEGIN IMMEDIATE``), committed on success."""
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(cfn_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self._read_lock, self.engine.connect() as conn, conn.begin():
            yield conn

    def _create_schema(self) -> None:
        """Upgrade the database to :func:`head_revision` (see the module docstring)."""
        with self.write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_INIT_LOCK)))
            _schema_versions.upgrade(conn, _VERSIONS, where=_where(make_url(self.url)))

    def close(self) -> None:
        self.engine.dispose()


def _where(url: URL) -> str:
    """Which store: the SQLite file, or host:port/database (never the password)."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _unreachable(url: URL, exc: sa_exc.SQLAlchemyError) -> StoreUnreachable:
    """The error that says which store could not be reached, and why, in one line."""
    where = _where(url)
    cause = getattr(exc, "orig", None) or exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
    return StoreUnreachable(f"cannot reach the job store at {where}: {reason}", where=where)
