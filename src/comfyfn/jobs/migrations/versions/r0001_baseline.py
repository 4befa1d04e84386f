"""Baseline: the store as it was before schema versions (stamped onto such databases).

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
    op.create_table(
        "cfn_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "cfn_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(8), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("rate", sa.String(40), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("max_priority", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_cfn_keys_prefix", "cfn_keys", ["prefix"])
    active = sa.text("revoked = false")
    op.create_index(
        "cfn_keys_active_name",
        "cfn_keys",
        ["name"],
        unique=True,
        sqlite_where=active,
        postgresql_where=active,
    )
    op.create_table(
        "cfn_jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("server", sa.Text),
        sa.Column("prompt_id", sa.String(100)),
        sa.Column("progress", sa.Double, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("outputs", sa.Text, nullable=False),
        sa.Column("webhook", sa.Text),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("heartbeat_at", sa.Double),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.UniqueConstraint("key_id", "idempotency_key", name="cfn_jobs_idempotency"),
    )
    op.create_index("cfn_jobs_queue", "cfn_jobs", ["state", "created_at"])
    op.create_index("cfn_jobs_heartbeat", "cfn_jobs", ["state", "heartbeat_at"])
    op.create_index("cfn_jobs_key", "cfn_jobs", ["key_id", "created_at"])
    op.create_table(
        "cfn_files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "job_id",
            sa.String(40),
            sa.ForeignKey("cfn_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_cfn_files_job_id", "cfn_files", ["job_id"])


def downgrade() -> None:
    for table in ("cfn_files", "cfn_jobs", "cfn_keys", "cfn_meta"):
        op.drop_table(table)
