"""The job store's schema versions (Alembic revisions), applied by
:mod:`comfyfn.jobs.database` when a store opens; shipped inside the package.

A new revision: a file in ``versions/`` with ``revision``/``down_revision`` after the last
one, and the same change in :mod:`comfyfn.jobs.schema` (what the queries use).
"""
