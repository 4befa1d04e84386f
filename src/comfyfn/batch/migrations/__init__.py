"""The batch manifest's schema versions: Alembic revisions in ``versions/``, shipped inside
the package and applied by :func:`upgrade` when :class:`comfyfn.batch.manifest.Manifest`
opens a manifest.

The common case costs one query: a manifest already at :data:`HEAD` is seen with
:mod:`sqlite3` and left alone, without importing SQLAlchemy and Alembic (100–200 ms at every
``comfyfn batch`` start). Any other manifest (a new one, one made before versions, one at an
older revision, one a newer comfyfn made) goes through :mod:`comfyfn._schema_versions`, as the
job store does, in one ``BEGIN IMMEDIATE`` transaction on the manifest's own
connection: a manifest made before versions gets the ``executed`` column if it lacks it and
is stamped ``0001``; one at a revision this comfyfn does not know is refused, unchanged.

A new revision: a file in ``versions/`` with ``revision``/``down_revision`` after the last
one, :data:`HEAD` set to it (a test compares it with Alembic's), and the same change in the
queries of :mod:`comfyfn.batch.manifest`.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from comfyfn._schema_versions import Versions

__all__ = ["HEAD", "VERSIONS", "VERSION_TABLE", "current", "upgrade"]

HEAD = "0001"  #: the newest revision in versions/: manifests at it open without Alembic
VERSION_TABLE = "batch_alembic_version"

log = logging.getLogger("comfyfn.batch")

VERSIONS = Versions(
    name="manifest",
    migrations=Path(__file__).parent,
    version_table=VERSION_TABLE,
    baseline="0001",
    marker="jobs",
    added_before=(("jobs", "executed", "REAL"),),
    log=log,
)


def upgrade(db: sqlite3.Connection, path: str | Path) -> None:
    """Bring the manifest ``path`` open on ``db`` (autocommit: ``isolation_level=None``, no
    transaction open) to :data:`HEAD`. Raises :class:`~comfyfn.errors.SchemaTooNew` for a
    manifest a newer comfyfn made, :class:`~comfyfn.errors.ConfigError` naming it when
    Alembic cannot upgrade it, :class:`sqlite3.Error` for one SQLite cannot use."""
    if current(db) != HEAD:
        _migrate(db, str(path))


def current(db: sqlite3.Connection) -> str | None:
    """The revision the manifest's version table holds, read with :mod:`sqlite3` alone
    (None: no version table — a new manifest, or one made before versions)."""
    try:
        rows = db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
    except sqlite3.OperationalError:  # no such table (any other trouble shows again below)
        return None
    return str(rows[0][0]) if len(rows) == 1 else None


def _migrate(db: sqlite3.Connection, where: str) -> None:
    """Run :func:`comfyfn._schema_versions.upgrade` on ``db`` itself (lent to SQLAlchemy, so
    an in-memory manifest is migrated too), in one ``BEGIN IMMEDIATE`` transaction."""
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import StaticPool

    from comfyfn import _schema_versions

    # never disposed: that would close ``db``, which stays the manifest's
    engine = sa.create_engine("sqlite://", creator=lambda: db, poolclass=StaticPool)

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.connect() as conn, conn.begin():
            _schema_versions.upgrade(conn, VERSIONS, where=where)
    except DBAPIError as exc:  # SQLite's own error, as the manifest reports the others
        if isinstance(exc.orig, sqlite3.Error):
            raise exc.orig from exc
        raise
