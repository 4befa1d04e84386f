"""Alembic's environment for the batch manifest: migrations run on the connection (and inside
the transaction) that :mod:`comfyfn.batch.migrations` hands over in
``config.attributes["connection"]``, never on a connection of their own."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="batch_alembic_version")
with context.begin_transaction():
    context.run_migrations()
