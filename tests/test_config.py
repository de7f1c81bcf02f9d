"""Settings from the environment, a JSON or YAML file, and overrides; passwords never shown."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import make_url

from hokusai_mlflow_plugin.config import ConfigError, load_settings

PASSWORD = "p@ss:w/rd"


@pytest.fixture
def home(tmp_path):
    return tmp_path / "hokusai-home"


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_the_default_database_is_a_sqlite_file_under_hokusai_home(home):
    settings = load_settings(environ={"HOKUSAI_HOME": str(home)})
    assert settings.home == home
    assert settings.database_url == f"sqlite:///{home / 'hokusai.db'}"
    assert make_url(settings.database_url).database == str(home / "hokusai.db")
    assert settings.webhook_secrets == ()
    assert settings.redis_stream == "hokusai:events"
    assert settings.log_level == "INFO"
    assert settings.tracking_uri is None


def test_without_hokusai_home_the_data_directory_is_dot_hokusai_in_the_users_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = load_settings(environ={})
    assert settings.home == tmp_path / ".hokusai"
    assert settings.database_url == f"sqlite:///{tmp_path / '.hokusai' / 'hokusai.db'}"


def test_hokusai_database_url_wins_over_the_parts_and_the_default(home):
    settings = load_settings(
        environ={
            "HOKUSAI_HOME": str(home),
            "HOKUSAI_DATABASE_URL": "postgresql://u:pw@db.example:5432/tokens",
            "HOKUSAI_DB_HOST": "other-host",
            "HOKUSAI_DB_NAME": "other",
        }
    )
    assert settings.database_url == "postgresql://u:pw@db.example:5432/tokens"


def test_the_original_platforms_db_parts_build_a_postgresql_url():
    settings = load_settings(
        environ={
            "HOKUSAI_DB_TYPE": "postgres",
            "HOKUSAI_DB_HOST": "db.example",
            "HOKUSAI_DB_PORT": "5433",
            "HOKUSAI_DB_NAME": "hokusai_tokens",
            "HOKUSAI_DB_USER": "hokusai",
            "HOKUSAI_DB_PASSWORD": PASSWORD,
        }
    )
    url = make_url(settings.database_url)
    assert url.get_backend_name() == "postgresql"
    assert (url.host, url.port, url.database, url.username) == ("db.example", 5433, "hokusai_tokens", "hokusai")
    assert url.password == PASSWORD  # URL-quoted on the way in, the same string on the way out


def test_db_parts_with_special_characters_in_the_user_too():
    settings = load_settings(environ={"HOKUSAI_DB_HOST": "h", "HOKUSAI_DB_USER": "me@corp", "HOKUSAI_DB_PASSWORD": "a b#c?d"})
    url = make_url(settings.database_url)
    assert (url.username, url.password, url.database) == ("me@corp", "a b#c?d", "hokusai")
    assert url.get_backend_name() == "postgresql"


def test_password_free_db_parts_default_host_and_name():
    url = make_url(load_settings(environ={"HOKUSAI_DB_TYPE": "postgresql"}).database_url)
    assert (url.host, url.database, url.password, url.port) == ("localhost", "hokusai", None, None)


def test_safe_database_url_and_repr_never_show_the_password():
    settings = load_settings(
        environ={"HOKUSAI_DB_HOST": "db.example", "HOKUSAI_DB_USER": "hokusai", "HOKUSAI_DB_PASSWORD": PASSWORD,
                 "HOKUSAI_WEBHOOK_SECRET": "whsecret-1", "HOKUSAI_EVENT_WEBHOOK_SECRET": "whsec_abc"}
    )
    for text in (settings.safe_database_url, repr(settings), str(settings)):
        for secret in (PASSWORD, "p%40ss%3Aw%2Frd", "whsecret-1", "whsec_abc"):
            assert secret not in text
    assert settings.safe_database_url == "postgresql://hokusai:***@db.example/hokusai"
    assert PASSWORD in make_url(settings.database_url).password  # still usable by SQLAlchemy


def test_repr_never_shows_a_redis_password():
    settings = load_settings(environ={"HOKUSAI_REDIS_URL": "redis://:redis-pw-123@cache:6379/0"})
    assert settings.redis_url == "redis://:redis-pw-123@cache:6379/0"
    assert "redis-pw-123" not in repr(settings)


def test_the_outcome_tag_linger_and_mlflow_store_are_read_from_the_environment():
    settings = load_settings(environ={})
    assert settings.outcome_tag_linger == 1.0 and settings.mlflow_store_uri is None
    settings = load_settings(environ={"HOKUSAI_OUTCOME_TAG_LINGER": "0.05",
                                      "HOKUSAI_MLFLOW_STORE_URI": "postgresql://mlflow:store-pw-9@db/mlflow"})
    assert settings.outcome_tag_linger == 0.05
    assert settings.mlflow_store_uri == "postgresql://mlflow:store-pw-9@db/mlflow"
    assert "store-pw-9" not in repr(settings)
    with pytest.raises(ConfigError, match="HOKUSAI_OUTCOME_TAG_LINGER must be a number of seconds"):
        load_settings(environ={"HOKUSAI_OUTCOME_TAG_LINGER": "soon"})


def test_a_json_config_file_with_lower_case_keys(home, tmp_path):
    path = write_json(
        tmp_path / "hokusai.json",
        {"home": str(home), "db_host": "db", "db_password": PASSWORD, "db_port": 5432,
         "tracking_uri": "http://mlflow:5000", "webhook_secret": "a,b", "log_level": "debug",
         "unknown_key": "ignored"},
    )
    settings = load_settings(path, environ={})
    url = make_url(settings.database_url)
    assert (url.host, url.port, url.password) == ("db", 5432, PASSWORD)
    assert settings.home == home
    assert settings.tracking_uri == "http://mlflow:5000"
    assert settings.webhook_secrets == ("a", "b")
    assert settings.log_level == "DEBUG"


def test_a_yaml_config_file_with_the_original_platforms_upper_case_keys(tmp_path):
    path = tmp_path / "hokusai.yaml"
    path.write_text(
        "HOKUSAI_DB_TYPE: postgresql\n"
        "HOKUSAI_DB_HOST: db.example\n"
        "HOKUSAI_DB_PORT: 6543\n"
        "HOKUSAI_DB_NAME: tokens\n"
        "HOKUSAI_DB_USER: hokusai\n"
        f"HOKUSAI_DB_PASSWORD: '{PASSWORD}'\n"
        "HOKUSAI_REDIS_STREAM: custom:events\n",
        encoding="utf-8",
    )
    settings = load_settings(str(path), environ={})
    url = make_url(settings.database_url)
    assert (url.host, url.port, url.database, url.username, url.password) == (
        "db.example", 6543, "tokens", "hokusai", PASSWORD,
    )
    assert settings.redis_stream == "custom:events"


def test_the_config_file_may_come_from_hokusai_config(tmp_path):
    path = write_json(tmp_path / "c.json", {"database_url": "sqlite:////data/tokens.db"})
    assert load_settings(environ={"HOKUSAI_CONFIG": path}).database_url == "sqlite:////data/tokens.db"


def test_an_empty_yaml_file_gives_the_defaults(tmp_path, home):
    path = tmp_path / "empty.yml"
    path.write_text("", encoding="utf-8")
    assert load_settings(str(path), environ={"HOKUSAI_HOME": str(home)}).database_url == f"sqlite:///{home / 'hokusai.db'}"


def test_the_environment_overrides_the_file(tmp_path):
    path = write_json(
        tmp_path / "c.json",
        {"database_url": "sqlite:////from/file.db", "redis_stream": "file:stream", "webhook_secret": "file-secret"},
    )
    settings = load_settings(
        path, environ={"HOKUSAI_DATABASE_URL": "sqlite:////from/env.db", "HOKUSAI_WEBHOOK_SECRET": "env-secret"}
    )
    assert settings.database_url == "sqlite:////from/env.db"
    assert settings.webhook_secrets == ("env-secret",)
    assert settings.redis_stream == "file:stream"  # what the environment does not set, the file does


def test_mlflow_tracking_uri_in_the_environment_overrides_the_file(tmp_path):
    path = write_json(tmp_path / "c.json", {"tracking_uri": "http://from-file:5000"})
    assert load_settings(path, environ={"MLFLOW_TRACKING_URI": "http://from-env:5000"}).tracking_uri == "http://from-env:5000"


def test_mlflow_tracking_uri_is_read_and_hokusai_tracking_uri_wins_over_it():
    assert load_settings(environ={"MLFLOW_TRACKING_URI": "http://m:5000"}).tracking_uri == "http://m:5000"
    settings = load_settings(environ={"MLFLOW_TRACKING_URI": "http://m:5000", "HOKUSAI_TRACKING_URI": "http://h:5000"})
    assert settings.tracking_uri == "http://h:5000"


def test_overrides_win_over_file_and_environment_and_none_is_no_override(tmp_path):
    path = write_json(tmp_path / "c.json", {"database_url": "sqlite:////from/file.db", "tracking_uri": "http://file"})
    settings = load_settings(
        path,
        environ={"HOKUSAI_DATABASE_URL": "sqlite:////from/env.db", "MLFLOW_TRACKING_URI": "http://env"},
        database_url="sqlite:////from/cli.db",
        tracking_uri=None,
    )
    assert settings.database_url == "sqlite:////from/cli.db"
    assert settings.tracking_uri == "http://env"


def test_a_comma_separated_webhook_secret_is_a_tuple_for_rotation():
    settings = load_settings(environ={"HOKUSAI_WEBHOOK_SECRET": " new-secret , old-secret,, "})
    assert settings.webhook_secrets == ("new-secret", "old-secret")
    urls = load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": "https://a/hook,https://b/hook"}).event_webhook_urls
    assert urls == ("https://a/hook", "https://b/hook")


def test_a_missing_config_file_is_a_config_error_naming_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load_settings(str(missing), environ={})
    assert str(missing) in str(e.value)
    assert "Cannot read the config file" in str(e.value)


def test_a_directory_as_config_file_is_a_config_error_naming_the_path(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read the config file") as e:
        load_settings(str(tmp_path), environ={})
    assert str(tmp_path) in str(e.value)


@pytest.mark.parametrize(
    "name, text, kind",
    [("c.json", "{not json", "JSON"), ("c.yaml", "a: [1, 2\n", "YAML"), ("c.yml", "key: : :\n  - x", "YAML")],
)
def test_an_invalid_config_file_is_a_config_error_naming_the_path(tmp_path, name, text, kind):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_settings(str(path), environ={})
    assert str(path) in str(e.value)
    assert f"is not valid {kind}" in str(e.value)


@pytest.mark.parametrize("text", ["[1, 2]", '"just a string"'])
def test_a_config_file_that_is_not_a_mapping_is_a_config_error(tmp_path, text):
    path = tmp_path / "c.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping of settings") as e:
        load_settings(str(path), environ={})
    assert str(path) in str(e.value)


def test_an_invalid_yaml_file_does_not_quote_the_password(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("db_password: hunter2: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_settings(str(path), environ={})
    assert str(path) in str(e.value)
    assert "hunter2" not in str(e.value)


def test_an_upper_case_yaml_suffix_is_named_yaml_in_the_error(tmp_path):
    path = tmp_path / "C.YAML"
    path.write_text("a: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_settings(str(path), environ={})


def test_an_unparseable_database_url_is_a_config_error_without_the_url():
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"HOKUSAI_DATABASE_URL": "not a url with secretpw"})
    assert "database URL is not a SQLAlchemy URL" in str(e.value)
    assert "secretpw" not in str(e.value)
