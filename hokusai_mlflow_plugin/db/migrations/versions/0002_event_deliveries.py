"""Event deliveries: one row per (event, sink), every attempt recorded.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BIGINT = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_index("ix_hokusai_outbox_created_at", "hokusai_outbox", ["created_at"])
    op.create_table(
        "hokusai_deliveries",
        sa.Column("id", BIGINT, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("outbox_id", BIGINT, nullable=False),
        sa.Column("sink", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True)),
        sa.Column("lease_owner", sa.String(36)),
        sa.Column("horizon_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hokusai_deliveries"),
        sa.UniqueConstraint("event_id", "sink", name="uq_hokusai_deliveries_event_sink"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["hokusai_outbox.event_id"], ondelete="CASCADE",
            name="fk_hokusai_deliveries_event_id_hokusai_outbox",
        ),
    )
    op.create_index("ix_hokusai_deliveries_due", "hokusai_deliveries", ["sink", "status", "next_attempt_at"])
    op.create_table(
        "hokusai_delivery_attempts",
        sa.Column("id", BIGINT, autoincrement=True),
        sa.Column("delivery_id", BIGINT, nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hokusai_delivery_attempts"),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["hokusai_deliveries.id"], ondelete="CASCADE",
            name="fk_hokusai_delivery_attempts_delivery_id_hokusai_deliveries",
        ),
    )
    op.create_index("ix_hokusai_delivery_attempts_delivery_id", "hokusai_delivery_attempts", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("hokusai_delivery_attempts")
    op.drop_table("hokusai_deliveries")
    op.drop_index("ix_hokusai_outbox_created_at", "hokusai_outbox")
