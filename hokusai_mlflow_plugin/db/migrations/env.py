"""Alembic environment for the token store. It never configures logging: it runs in-process inside
the CLI, the receiver and the tests, whose logging is theirs."""

from alembic import context

from hokusai_mlflow_plugin.db.migrate import VERSION_TABLE
from hokusai_mlflow_plugin.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
