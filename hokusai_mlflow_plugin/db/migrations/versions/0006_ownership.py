"""Ownership: principals (users and teams, one namespace), team members, a token's owner and
grants, the user of each API key, and who made each MLflow run and logged model (provenance).

Existing non-admin keys each get a user of their own name (keys of one name share it); admin
keys stay an operator's. Existing tokens keep no owner: only admins reach them until they get one.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hokusai_principals",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hokusai_principals"),
        sa.UniqueConstraint("name", name="uq_hokusai_principals_name"),
        sa.CheckConstraint("kind IN ('user', 'team')", name="ck_hokusai_principals_kind"),
    )
    op.create_table(
        "hokusai_team_members",
        sa.Column("team_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["hokusai_principals.id"], ondelete="CASCADE",
                                name="fk_hokusai_team_members_team_id_hokusai_principals"),
        sa.ForeignKeyConstraint(["user_id"], ["hokusai_principals.id"], ondelete="CASCADE",
                                name="fk_hokusai_team_members_user_id_hokusai_principals"),
        sa.PrimaryKeyConstraint("team_id", "user_id", name="pk_hokusai_team_members"),
    )
    op.create_index("ix_hokusai_team_members_user_id", "hokusai_team_members", ["user_id"])
    op.create_table(
        "hokusai_token_grants",
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("principal_id", sa.Integer, nullable=False),
        sa.Column("permission", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["hokusai_tokens.token_id"], ondelete="CASCADE",
                                name="fk_hokusai_token_grants_token_id_hokusai_tokens"),
        sa.ForeignKeyConstraint(["principal_id"], ["hokusai_principals.id"], ondelete="CASCADE",
                                name="fk_hokusai_token_grants_principal_id_hokusai_principals"),
        sa.PrimaryKeyConstraint("token_id", "principal_id", name="pk_hokusai_token_grants"),
        sa.CheckConstraint("permission IN ('read', 'register')", name="ck_hokusai_token_grants_permission"),
    )
    op.create_index("ix_hokusai_token_grants_principal_id", "hokusai_token_grants", ["principal_id"])
    op.create_table(
        "hokusai_mlflow_makers",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["hokusai_principals.id"], ondelete="SET NULL",
                                name="fk_hokusai_mlflow_makers_user_id_hokusai_principals"),
        # object_id first: a decision looks its objects up by id (kinds never share an id's form)
        sa.PrimaryKeyConstraint("object_id", "kind", name="pk_hokusai_mlflow_makers"),
    )
    with op.batch_alter_table("hokusai_tokens") as batch:
        batch.add_column(sa.Column("owner_id", sa.Integer))
        batch.create_foreign_key("fk_hokusai_tokens_owner_id_hokusai_principals", "hokusai_principals", ["owner_id"], ["id"],
                                 ondelete="SET NULL")
        batch.create_index("ix_hokusai_tokens_owner_id", ["owner_id"])
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.add_column(sa.Column("user_id", sa.Integer))
        batch.create_foreign_key("fk_hokusai_api_keys_user_id_hokusai_principals", "hokusai_principals", ["user_id"], ["id"],
                                 ondelete="SET NULL")

    # Each existing non-admin key gets a user of its own name (one user per name).
    keys = sa.table("hokusai_api_keys", sa.column("id", sa.Integer), sa.column("name", sa.String),
                    sa.column("scopes", sa.String), sa.column("user_id", sa.Integer))
    principals = sa.table("hokusai_principals", sa.column("id", sa.Integer), sa.column("name", sa.String),
                          sa.column("kind", sa.String), sa.column("created_at", sa.DateTime(timezone=True)))
    conn = op.get_bind()
    rows = conn.execute(sa.select(keys.c.id, keys.c.name, keys.c.scopes)).all()
    now = sa.func.current_timestamp()
    users: dict[str, int] = {}
    for key_id, name, scopes in rows:
        if "admin" in scopes.split(","):
            continue
        name = name.strip()[:128]
        if name not in users:
            conn.execute(sa.insert(principals).values(name=name, kind="user", created_at=now))
            users[name] = conn.execute(sa.select(principals.c.id).where(principals.c.name == name)).scalar_one()
        conn.execute(sa.update(keys).where(keys.c.id == key_id).values(user_id=users[name]))


def downgrade() -> None:
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.drop_constraint("fk_hokusai_api_keys_user_id_hokusai_principals", type_="foreignkey")
        batch.drop_column("user_id")
    with op.batch_alter_table("hokusai_tokens") as batch:
        batch.drop_index("ix_hokusai_tokens_owner_id")
        batch.drop_constraint("fk_hokusai_tokens_owner_id_hokusai_principals", type_="foreignkey")
        batch.drop_column("owner_id")
    op.drop_table("hokusai_mlflow_makers")
    op.drop_index("ix_hokusai_token_grants_principal_id", "hokusai_token_grants")
    op.drop_table("hokusai_token_grants")
    op.drop_index("ix_hokusai_team_members_user_id", "hokusai_team_members")
    op.drop_table("hokusai_team_members")
    op.drop_table("hokusai_principals")
