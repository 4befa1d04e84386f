"""A job's run times as the report of a batch shows them: ``executed``, the seconds its
server spent executing it (not waiting in its queue), and ``turnaround``, from its last
submission (or re-attach) to its outputs in hand. Nullable: older jobs have neither.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cfn_jobs", sa.Column("executed", sa.Double))
    op.add_column("cfn_jobs", sa.Column("turnaround", sa.Double))


def downgrade() -> None:
    for column in ("turnaround", "executed"):
        op.drop_column("cfn_jobs", column)
