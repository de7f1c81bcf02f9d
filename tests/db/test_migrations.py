"""The token store's Alembic migrations: they build exactly the models' schema, on SQLite and
PostgreSQL, in their own version table, without touching the host's logging."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hokusai_mlflow_plugin.db.migrate import VERSION_TABLE, is_current, upgrade
from hokusai_mlflow_plugin.db.models import Base
from hokusai_mlflow_plugin.db.session import get_engine
from tests.harness import create_pg_database, drop_pg_database

# Every table the models declare (more may come with later revisions), and the ones that must be.
TABLES = set(Base.metadata.tables)
CORE = {"hokusai_tokens", "hokusai_registrations", "hokusai_outbox", "hokusai_sweep_state"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tokens.db'}"
        yield url
        get_engine(url).dispose()
        return
    url = create_pg_database("hokusai_migrations")
    try:
        yield url
    finally:
        get_engine(url).dispose()
        drop_pg_database(url)


def schema_differences(url: str) -> list:
    """What autogenerate would change to bring the database to ``Base.metadata``."""
    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection)
        diff = compare_metadata(context, Base.metadata)
    return [d for d in diff if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]


def table_names(url: str) -> set[str]:
    with get_engine(url).connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def test_upgrade_builds_exactly_the_models_schema(database_url):
    assert not is_current(database_url)
    upgrade(database_url)
    assert is_current(database_url)
    assert schema_differences(database_url) == []
    assert table_names(database_url) == TABLES | {VERSION_TABLE}
    assert CORE <= TABLES


def test_before_upgrade_the_models_are_missing_everything(database_url):
    # Guards the comparison above: it does see a schema that is not there.
    table_names(database_url)  # creates the database file on SQLite
    missing = {d[1].name for d in schema_differences(database_url) if d[0] == "add_table"}
    assert missing == TABLES


def test_upgrade_twice_is_harmless(database_url):
    upgrade(database_url)
    with get_engine(database_url).begin() as connection:
        connection.execute(
            sa.text("INSERT INTO hokusai_sweep_state (key, value) VALUES ('watermark', '42')")
        )
    upgrade(database_url)
    assert is_current(database_url)
    assert schema_differences(database_url) == []
    with get_engine(database_url).connect() as connection:
        assert connection.execute(sa.text("SELECT value FROM hokusai_sweep_state")).scalar_one() == "42"
        versions = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    assert len(versions) == 1


def test_the_version_table_is_hokusais_own(database_url):
    upgrade(database_url)
    names = table_names(database_url)
    assert VERSION_TABLE == "hokusai_alembic_version"
    assert "hokusai_alembic_version" in names
    assert "alembic_version" not in names  # MLflow's own migrations use that name in a shared database


def test_a_foreign_alembic_version_table_is_left_alone(database_url):
    # MLflow's tables may share this database; its alembic_version must not confuse ours.
    with get_engine(database_url).begin() as connection:
        connection.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        connection.execute(sa.text("INSERT INTO alembic_version VALUES ('mlflow-head')"))
    assert not is_current(database_url)
    upgrade(database_url)
    assert is_current(database_url)
    with get_engine(database_url).connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "mlflow-head"


def test_upgrade_leaves_the_hosts_logging_alone(tmp_path):
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    root = logging.getLogger()
    host_logger = logging.getLogger("host.application")
    handler = logging.NullHandler()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.ERROR)
    watched = [logging.getLogger(name) for name in ("alembic", "alembic.runtime.migration", "sqlalchemy")]
    before = [(list(lg.handlers), lg.level, lg.propagate) for lg in watched]
    root_handlers = list(root.handlers)
    try:
        upgrade(url)
        assert root.handlers == root_handlers
        assert handler in root.handlers
        assert root.level == logging.ERROR
        assert not host_logger.disabled  # logging.config.fileConfig would disable existing loggers
        assert logging.root.manager.disable == logging.NOTSET
        assert [(list(lg.handlers), lg.level, lg.propagate) for lg in watched] == before
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        get_engine(url).dispose()


def test_0006_gives_each_existing_non_admin_key_a_user_of_its_name_and_keys_keep_working(database_url):
    """A database of revision 0005 with keys made the old way (two non-admin keys named 'ci', one
    admin key) and a token with a registration: after the upgrade the two 'ci' keys act for one
    user 'ci', the admin key for nobody, every key still authenticates, and the token, which keeps
    no owner, and its registration are whole."""
    import secrets

    from hokusai_mlflow_plugin.auth import keys, ownership
    from hokusai_mlflow_plugin.db.models import ApiKey, Principal, Token

    upgrade(database_url, "0005")
    made = {}
    with get_engine(database_url).begin() as connection:
        for key_id, name, scopes in (("0000c101", "ci", "read"), ("0000c102", "ci", "read,register"),
                                     ("0000ad01", "ops", "admin")):
            secret = secrets.token_urlsafe(32)
            connection.execute(sa.text(
                "INSERT INTO hokusai_api_keys (key_id, secret_sha256, name, scopes, created_at) "
                "VALUES (:key_id, :digest, :name, :scopes, CURRENT_TIMESTAMP)"),
                {"key_id": key_id, "digest": keys.digest(secret), "name": name, "scopes": scopes})
            made[key_id] = f"hk_{key_id}_{secret}"
        connection.execute(sa.text(
            "INSERT INTO hokusai_tokens (token_id, status, metric_name, baseline_value, created_at, updated_at) "
            "VALUES ('OLD1', 'draft', 'auroc', 0.8, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        connection.execute(sa.text(
            "INSERT INTO hokusai_registrations (model_name, model_version, token_id, outcome, reason, created_at) "
            "VALUES ('m', '1', 'OLD1', 'rejected', 'too low', CURRENT_TIMESTAMP)"))

    upgrade(database_url)
    assert is_current(database_url)
    assert schema_differences(database_url) == []
    with get_engine(database_url).connect() as connection:
        users = connection.execute(sa.select(Principal.name, Principal.kind, Principal.id)).all()
        assert [(name, kind) for name, kind, _ in users] == [("ci", "user")]
        ci = users[0].id
        owners = dict(connection.execute(sa.select(ApiKey.key_id, ApiKey.user_id)).all())
        assert owners == {"0000c101": ci, "0000c102": ci, "0000ad01": None}
        token = connection.execute(sa.select(Token.token_id, Token.status, Token.owner_id)).one()
        assert tuple(token) == ("OLD1", "draft", None)
        assert connection.execute(sa.text("SELECT reason FROM hokusai_registrations")).scalar_one() == "too low"
    with get_engine(database_url).begin() as connection:
        callers = {key_id: keys.authenticate(connection, key) for key_id, key in made.items()}
        assert {k: c.user_id for k, c in callers.items()} == owners
        # the unowned token: the admin key reaches it, the old 'ci' keys do not
        assert ownership.right(connection, callers["0000ad01"], "OLD1") == "register"
        assert ownership.right(connection, callers["0000c102"], "OLD1") is None
