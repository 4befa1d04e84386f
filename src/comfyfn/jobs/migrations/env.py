"""Alembic's environment for the job store: :func:`comfyfn._schema_versions.run_environment`
(the migrations run on the connection and inside the transaction it is handed)."""

from comfyfn._schema_versions import run_environment

run_environment()
