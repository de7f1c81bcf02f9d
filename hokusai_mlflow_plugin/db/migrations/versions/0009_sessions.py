"""Sessions of people signed in with an API key (the console and the MLflow UI through the
gateway), kept on the server so that a sign-out ends them: the SHA-256 of the cookie's random id,
the key, and when the session ends.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hokusai_sessions",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("id_sha256", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(["key_id"], ["hokusai_api_keys.key_id"], ondelete="CASCADE",
                                name="fk_hokusai_sessions_key_id_hokusai_api_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_hokusai_sessions"),
        sa.UniqueConstraint("id_sha256", name="uq_hokusai_sessions_id_sha256"),
    )
    op.create_index("ix_hokusai_sessions_key_id", "hokusai_sessions", ["key_id"])
    op.create_index("ix_hokusai_sessions_expires_at", "hokusai_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_hokusai_sessions_expires_at", "hokusai_sessions")
    op.drop_index("ix_hokusai_sessions_key_id", "hokusai_sessions")
    op.drop_table("hokusai_sessions")
