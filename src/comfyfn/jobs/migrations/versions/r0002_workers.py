"""Runners on many machines: claim fencing, model-aware claims, the runners' registry, an
index of the queue alone, and room for batch rows (phase 2; nullable, so free to add).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cfn_jobs", sa.Column("claims", sa.Integer, nullable=False, server_default="0"))
    op.add_column("cfn_jobs", sa.Column("models", sa.String(64)))
    op.add_column("cfn_jobs", sa.Column("batch", sa.String(200)))
    op.add_column("cfn_jobs", sa.Column("target", sa.Text))
    op.add_column("cfn_jobs", sa.Column("row_key", sa.String(255)))
    queued = sa.text("state = 'queued'")
    op.create_index(
        "cfn_jobs_queued",
        "cfn_jobs",
        ["priority", "created_at"],
        postgresql_where=queued,
        sqlite_where=queued,
    )
    op.create_table(
        "cfn_workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("heartbeat_at", sa.Double, nullable=False),
        sa.Column("free_slots", sa.Integer, nullable=False),
        sa.Column("servers", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cfn_workers")
    op.drop_index("cfn_jobs_queued", "cfn_jobs")
    for column in ("row_key", "target", "batch", "models", "claims"):
        op.drop_column("cfn_jobs", column)
