"""The store's database: a SQLAlchemy engine opened the right way for its backend.

* **SQLite** (the embedded default: ``sqlite:///path/to/gateway.db``), opened in WAL mode with a
  busy timeout, usable from any thread (``check_same_thread=False``); every write transaction is
  ``BEGIN IMMEDIATE`` so that writers queue on the database lock up front instead of failing
  with "database is locked" when they upgrade a read to a write. One writer at a time per
  process (the file lock serialises writers anyway; this spares in-process threads SQLite's
  sleep-and-retry busy handler); an in-memory database is one shared connection, guarded for
  every statement.
* **PostgreSQL** (``postgresql+psycopg://user@host/db``, a plain ``postgresql://`` URL meaning
  psycopg 3), which several gateway replicas share; the schema is created under an advisory
  lock, so replicas starting together do not race.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from comfyfn.gateway.schema import meta_t, metadata

__all__ = ["SCHEMA_VERSION", "SQLITE_BUSY_TIMEOUT", "Database", "unavailable"]

SCHEMA_VERSION = "1"
SQLITE_BUSY_TIMEOUT = 30.0  #: seconds a SQLite writer waits for the database lock by default
_PG_INIT_LOCK = 0x63666E5F73746F72  # pg_advisory_xact_lock key for schema creation ("cfn_stor")
#: (table, integer column defaulting to 0) added after the first schema
_ADDED_COLUMNS = (
    ("cfn_jobs", "attempts"),
    ("cfn_jobs", "priority"),
    ("cfn_keys", "max_priority"),
)
#: database errors that mean "not now" (down, restarting, locked, pool exhausted)
_NOT_NOW = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


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
        self._create_schema()

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
        with self.write() as conn:
            if self.dialect == "postgresql":
                # replicas starting together must not race on CREATE TABLE
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_INIT_LOCK)))
            metadata.create_all(conn, checkfirst=True)
            self._add_columns(conn)
            have = conn.execute(
                sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")
            ).scalar()
            if have is None:
                conn.execute(sa.insert(meta_t).values(key="schema_version", value=SCHEMA_VERSION))

    @staticmethod
    def _add_columns(conn: Connection) -> None:
        """The columns added since the first schema, to a database made before them."""
        inspector = sa.inspect(conn)
        for table, added in _ADDED_COLUMNS:
            if added not in {c["name"] for c in inspector.get_columns(table)}:
                conn.exec_driver_sql(
                    f"ALTER TABLE {table} ADD COLUMN {added} INTEGER NOT NULL DEFAULT 0"
                )

    def close(self) -> None:
        self.engine.dispose()
