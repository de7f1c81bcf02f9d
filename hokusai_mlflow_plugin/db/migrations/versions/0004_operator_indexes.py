"""Indexes for the operator console: registrations by time (decisions per hour, last 24 h) and
deliveries by status (pending, failed and dead counted without reading the delivered ones).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_hokusai_registrations_created_at", "hokusai_registrations", ["created_at"])
    op.create_index("ix_hokusai_deliveries_status", "hokusai_deliveries", ["status"])


def downgrade() -> None:
    op.drop_index("ix_hokusai_deliveries_status", table_name="hokusai_deliveries")
    op.drop_index("ix_hokusai_registrations_created_at", table_name="hokusai_registrations")
