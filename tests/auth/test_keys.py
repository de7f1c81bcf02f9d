"""API keys on SQLite and PostgreSQL: their form, what is stored, and every reason a key is refused."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.models import ApiKey, Principal, utcnow
from hokusai_mlflow_plugin.db.session import get_engine, session_factory


def make(url, *scopes, expires_in=None, name="k"):
    with session_factory(url).begin() as session:
        return keys.create(session, name, scopes or ("read",), expires_in)


def check(url, key, now=None):
    with get_engine(url).begin() as conn:
        return keys.authenticate(conn, key, now)


def test_a_key_has_the_typed_form_and_only_its_hash_is_stored(db_url):
    made = make(db_url, "read", "register")
    assert re.fullmatch(r"hk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", made.key)
    key_id, secret = made.key[3:11], made.key[12:]
    with session_factory(db_url)() as session:
        row = session.scalars(sa.select(ApiKey)).one()
    assert row.key_id == key_id and row.secret_sha256 == keys.digest(secret)
    assert secret not in {str(v) for v in vars(row).values()}
    assert "secret" not in str(made.record) and secret not in str(made.record)
    caller = check(db_url, made.key)
    assert (caller.key_id, caller.name, caller.scopes) == (key_id, "k", ("read", "register"))
    with session_factory(db_url)() as session:  # a non-admin key without --user acts for a user of its name
        assert caller.user_id == session.scalars(sa.select(Principal.id).where(Principal.name == "k")).one()


@pytest.mark.parametrize("key, why", [
    (None, "An API key is required"),
    ("", "An API key is required"),
    ("hk_short", "malformed"),
    ("sk_abcdef12_" + "x" * 43, "malformed"),
])
def test_missing_and_malformed_keys(db_url, key, why):
    with pytest.raises(keys.NotAuthenticated, match=why):
        check(db_url, key)


def test_an_unknown_id_or_a_wrong_secret_is_unknown(db_url):
    made = make(db_url)
    wrong = made.key[:-1] + ("A" if made.key[-1] != "A" else "B")
    for key in (wrong, "hk_00000000_" + made.key[12:]):
        with pytest.raises(keys.NotAuthenticated, match="is not known") as e:
            check(db_url, key)
        assert made.key[12:] not in str(e.value)


def test_revoked_and_expired_keys_are_refused(db_url):
    revoked, expiring = make(db_url), make(db_url, expires_in=timedelta(minutes=30))
    with session_factory(db_url).begin() as session:
        keys.revoke(session, revoked.record["key_id"])
    with pytest.raises(keys.NotAuthenticated, match="was revoked"):
        check(db_url, revoked.key)
    assert check(db_url, expiring.key).key_id == expiring.record["key_id"]
    with pytest.raises(keys.NotAuthenticated, match="expired"):
        check(db_url, expiring.key, now=utcnow() + timedelta(minutes=31))


def test_last_use_is_written_at_most_once_a_minute(db_url):
    made = make(db_url)

    def last_used():
        with session_factory(db_url)() as session:
            return session.scalars(sa.select(ApiKey.last_used_at)).one()

    now = utcnow()
    check(db_url, made.key, now)
    first = last_used()
    check(db_url, made.key, now + timedelta(seconds=30))
    assert last_used() == first  # a read stayed a read
    check(db_url, made.key, now + timedelta(seconds=61))
    assert last_used() > first


def test_scopes_climb_and_a_missing_one_is_named():
    reader = keys.Caller("abcd1234", "r", ("read",))
    registrar = keys.Caller("abcd1234", "r", ("register",))
    assert reader.allows("read") and not reader.allows("register") and not reader.allows("admin")
    assert registrar.allows("read") and registrar.allows("register") and not registrar.allows("admin")
    with pytest.raises(keys.MissingScope, match="lacks the 'admin' scope"):
        keys.require(registrar, "admin")


def test_bad_scopes_durations_and_names_say_what_to_give(db_url):
    assert keys.parse_scopes("Read, register,read") == ("read", "register")
    with pytest.raises(keys.ApiKeyError, match="Unknown scope 'write'"):
        keys.parse_scopes("read,write")
    assert keys.parse_duration("90d") == timedelta(days=90) and keys.parse_duration("12h") == timedelta(hours=12)
    with pytest.raises(keys.ApiKeyError, match="such as 90d"):
        keys.parse_duration("soon")
    with pytest.raises(keys.ApiKeyError, match="name of 1 to 128"):
        make(db_url, name=" ")
    with session_factory(db_url).begin() as session, pytest.raises(keys.ApiKeyError, match="No API key 'nope'"):
        keys.revoke(session, "nope")
