"""Token store: tokens, registrations, outbox, sweep state.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hokusai_tokens",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metric_name", sa.String(64)),
        sa.Column("baseline_value", sa.Float),
        sa.Column("metric_value", sa.Float),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("model_name", sa.String(256)),
        sa.Column("model_version", sa.String(32)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_id", name="pk_hokusai_tokens"),
    )
    op.create_index("ix_hokusai_tokens_status", "hokusai_tokens", ["status"])
    op.create_table(
        "hokusai_registrations",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("token_id", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("metric_name", sa.String(64)),
        sa.Column("metric_value", sa.Float),
        sa.Column("baseline_value", sa.Float),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("delivery_id", sa.String(64)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hokusai_registrations"),
        sa.UniqueConstraint("model_name", "model_version", name="uq_hokusai_registrations_model"),
    )
    op.create_index("ix_hokusai_registrations_token_id", "hokusai_registrations", ["token_id"])
    op.create_table(
        "hokusai_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hokusai_outbox"),
        sa.UniqueConstraint("event_id", name="uq_hokusai_outbox_event_id"),
    )
    op.create_index("ix_hokusai_outbox_event_type", "hokusai_outbox", ["event_type"])
    op.create_table(
        "hokusai_sweep_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_hokusai_sweep_state"),
    )


def downgrade() -> None:
    op.drop_table("hokusai_sweep_state")
    op.drop_table("hokusai_outbox")
    op.drop_table("hokusai_registrations")
    op.drop_table("hokusai_tokens")
