"""API keys: a public id, the SHA-256 of the secret, scopes, expiry, revocation and last use.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hokusai_api_keys",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_hokusai_api_keys"),
        sa.UniqueConstraint("key_id", name="uq_hokusai_api_keys_key_id"),
    )


def downgrade() -> None:
    op.drop_table("hokusai_api_keys")
