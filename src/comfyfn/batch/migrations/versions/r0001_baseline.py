"""Baseline: the manifest as it was before schema versions, ``executed`` included (stamped
onto such manifests once that column is there).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the types and defaults exactly as the manifests made before versions declare them
    op.create_table(
        "jobs",
        sa.Column("key", sa.TEXT, primary_key=True, nullable=True),  # as SQLite allowed it
        sa.Column("row", sa.INTEGER, nullable=False),
        sa.Column("label", sa.TEXT, nullable=False),
        sa.Column("stem", sa.TEXT, nullable=False),
        sa.Column("params", sa.TEXT, nullable=False),
        sa.Column("state", sa.TEXT, nullable=False),
        sa.Column("server", sa.TEXT),
        sa.Column("prompt_id", sa.TEXT),
        sa.Column("files", sa.TEXT),
        sa.Column("error", sa.TEXT),
        sa.Column("attempts", sa.INTEGER, nullable=False, server_default=sa.text("0")),
        sa.Column("submitted_at", sa.REAL),
        sa.Column("finished_at", sa.REAL),
        sa.Column("seconds", sa.REAL),
        sa.Column("executed", sa.REAL),
    )
    op.create_index("jobs_state", "jobs", ["state"])


def downgrade() -> None:
    op.drop_table("jobs")
