"""Schema versions as Alembic revisions, done one way for each comfyfn database: the
job store (:mod:`comfyfn.jobs.database`) and the batch manifest
(:mod:`comfyfn.batch.migrations`).

:func:`upgrade` runs inside the caller's write transaction, on its connection, so a database
is changed all at once or not at all:

* a database made before schema versions (its tables exist, no version table) is adopted
  once: the columns added before versions are added if missing (the last time columns are
  looked for) and it is stamped with the baseline revision;
* a database at a revision this comfyfn does not know (a newer comfyfn migrated it) is
  refused with :class:`~comfyfn.errors.SchemaTooNew`, nothing changed;
* otherwise it is brought to the newest revision (a new database: from nothing).

SQLAlchemy and Alembic are imported only when a function here is called (they cost
100–200 ms), so a caller with a quicker way to see its database is at the head may skip them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyfn.errors import ConfigError, SchemaTooNew

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["Versions", "head", "run_environment", "upgrade"]


@dataclass(frozen=True)
class Versions:
    """One database's schema versions: where its revisions are and how to adopt a database
    made before them."""

    name: str  #: what the database is, in messages: "job database", "manifest"
    migrations: Path  #: the Alembic script folder (env.py, versions/)
    version_table: str  #: its own, so databases of different kinds never mix revisions
    baseline: str  #: the revision a database made before versions is stamped with
    marker: str  #: a table whose presence without the version table means "made before"
    #: (table, column, SQL type and default) added before versions, missing from older ones
    added_before: tuple[tuple[str, str, str], ...]
    log: logging.Logger


def _script(versions: Versions) -> Any:
    from alembic.script import ScriptDirectory

    where = versions.migrations
    return ScriptDirectory(str(where), version_locations=[str(where / "versions")])


def head(versions: Versions) -> str:
    """The newest revision this comfyfn knows for ``versions``' database."""
    return str(_script(versions).get_current_head())


def upgrade(conn: Connection, versions: Versions, *, where: str) -> str | None:
    """Bring the database on ``conn`` (in a write transaction) to :func:`head`, adopting it
    first if it was made before versions; refuse one a newer comfyfn migrated. ``where``
    names the database (its file, or host and name) in the refusal. Returns the revision it
    was at (None: a new database)."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    if _unversioned(conn, versions):
        _adopt(conn, versions, where)
    context = MigrationContext.configure(conn, opts={"version_table": versions.version_table})
    have = context.get_current_revision()
    script = _script(versions)
    newest = str(script.get_current_head())
    if have is not None and have not in {r.revision for r in script.walk_revisions()}:
        raise SchemaTooNew(
            f"the {versions.name} {where}: its schema is at revision {have}, newer than this "
            f"comfyfn knows (up to {newest}): a newer comfyfn made it; upgrade comfyfn "
            "on this machine"
        )
    if have == newest:
        return have
    config = Config()
    # (ConfigParser interpolates %: an install path may hold one)
    config.set_main_option("script_location", str(versions.migrations).replace("%", "%%"))
    config.attributes["connection"] = conn
    config.attributes["version_table"] = versions.version_table
    try:
        command.upgrade(config, "head")
    except CommandError as exc:  # e.g. a version table with two rows
        raise ConfigError(f"the {versions.name} {where}: cannot upgrade its schema: {exc}") from exc
    versions.log.info(
        "%s %s: schema upgraded from %s to %s", versions.name, where, have or "nothing", newest
    )
    return have


def run_environment() -> None:
    """What every migrations folder's ``env.py`` does: run the migrations on the connection
    (and inside the transaction) that :func:`upgrade` hands over, never on one of their own,
    with the database's own version table."""
    from alembic import context

    attributes = context.config.attributes
    context.configure(
        connection=attributes["connection"], version_table=attributes["version_table"]
    )
    with context.begin_transaction():
        context.run_migrations()


def _unversioned(conn: Connection, versions: Versions) -> bool:
    import sqlalchemy as sa

    tables = set(sa.inspect(conn).get_table_names())
    return versions.version_table not in tables and versions.marker in tables


def _adopt(conn: Connection, versions: Versions, where: str) -> None:
    """A database made before schema versions: give it the columns added before them (the
    last time columns are looked for) and stamp it with the baseline revision."""
    import sqlalchemy as sa

    inspector = sa.inspect(conn)
    for table, added, kind in versions.added_before:
        if added not in {c["name"] for c in inspector.get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {added} {kind}")
    version = sa.Table(
        versions.version_table,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), primary_key=True),
    )
    version.create(conn)
    conn.execute(sa.insert(version).values(version_num=versions.baseline))
    versions.log.info(
        "%s %s made before schema versions: stamped %s", versions.name, where, versions.baseline
    )
