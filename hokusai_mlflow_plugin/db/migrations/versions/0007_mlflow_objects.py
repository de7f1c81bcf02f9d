"""MLflow objects' owners: who owns each experiment and registered model made through the gateway,
what their owners shared, and the experiment each recorded run and logged model was made in.

Objects made before (or on MLflow directly) get no row: only admin keys reach them, as tokens with
no owner.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hokusai_mlflow_objects",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.String(256), nullable=False),
        sa.Column("owner_id", sa.Integer),
        sa.Column("creator_id", sa.Integer),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["hokusai_principals.id"], ondelete="SET NULL",
                                name="fk_hokusai_mlflow_objects_owner_id_hokusai_principals"),
        sa.ForeignKeyConstraint(["creator_id"], ["hokusai_principals.id"], ondelete="SET NULL",
                                name="fk_hokusai_mlflow_objects_creator_id_hokusai_principals"),
        sa.PrimaryKeyConstraint("kind", "object_id", name="pk_hokusai_mlflow_objects"),
    )
    op.create_index("ix_hokusai_mlflow_objects_owner_id", "hokusai_mlflow_objects", ["owner_id"])
    op.create_table(
        "hokusai_mlflow_shares",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.String(256), nullable=False),
        sa.Column("principal_id", sa.Integer, nullable=False),
        sa.Column("permission", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["principal_id"], ["hokusai_principals.id"], ondelete="CASCADE",
                                name="fk_hokusai_mlflow_shares_principal_id_hokusai_principals"),
        sa.PrimaryKeyConstraint("kind", "object_id", "principal_id", name="pk_hokusai_mlflow_shares"),
        sa.CheckConstraint("permission IN ('read', 'edit')", name="ck_hokusai_mlflow_shares_permission"),
    )
    op.create_index("ix_hokusai_mlflow_shares_principal_id", "hokusai_mlflow_shares", ["principal_id"])
    with op.batch_alter_table("hokusai_mlflow_makers") as batch:
        batch.add_column(sa.Column("experiment_id", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("hokusai_mlflow_makers") as batch:
        batch.drop_column("experiment_id")
    op.drop_index("ix_hokusai_mlflow_shares_principal_id", "hokusai_mlflow_shares")
    op.drop_table("hokusai_mlflow_shares")
    op.drop_index("ix_hokusai_mlflow_objects_owner_id", "hokusai_mlflow_objects")
    op.drop_table("hokusai_mlflow_objects")
