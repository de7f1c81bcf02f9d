"""The token's life after registration: where it is deployed, and every status change it made
after draft -> registered (deployed, undeployed, archived), with who, when, why and the version.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hokusai_tokens") as batch:
        batch.add_column(sa.Column("deployment_target", sa.String(64)))
    op.create_table(
        "hokusai_token_transitions",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=False),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("model_name", sa.String(256)),
        sa.Column("model_version", sa.String(32)),
        sa.Column("target", sa.String(64)),
        sa.ForeignKeyConstraint(["token_id"], ["hokusai_tokens.token_id"], ondelete="CASCADE",
                                name="fk_hokusai_token_transitions_token_id_hokusai_tokens"),
        sa.PrimaryKeyConstraint("id", name="pk_hokusai_token_transitions"),
    )
    op.create_index("ix_hokusai_token_transitions_token_id", "hokusai_token_transitions", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_hokusai_token_transitions_token_id", "hokusai_token_transitions")
    op.drop_table("hokusai_token_transitions")
    with op.batch_alter_table("hokusai_tokens") as batch:
        batch.drop_column("deployment_target")
