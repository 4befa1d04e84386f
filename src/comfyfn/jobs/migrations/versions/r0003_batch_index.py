"""An index for following a batch: its jobs by state and finish time, so a follower counts
a batch's finished jobs and reads only those finished since its last look, however many
rows the batch has.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("cfn_jobs_batch", "cfn_jobs", ["batch", "state", "finished_at"])


def downgrade() -> None:
    op.drop_index("cfn_jobs_batch", "cfn_jobs")
