"""Sink states: an endpoint that answered 410 Gone is disabled until an operator enables it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hokusai_sink_states",
        sa.Column("sink", sa.String(512), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
        sa.Column("reason", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sink", name="pk_hokusai_sink_states"),
    )


def downgrade() -> None:
    op.drop_table("hokusai_sink_states")
