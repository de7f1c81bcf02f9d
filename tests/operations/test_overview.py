"""The console's aggregates on SQLite and PostgreSQL: decisions per UTC hour and in the last day
(one query, the same answer on both), tokens by status, both of the tokens a caller may read, tokens
with no owner, and whether a key is still in force."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.models import Registration, Token
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.operations import overview

NOW = datetime(2026, 12, 2, 10, 30, tzinfo=timezone.utc)


def test_decisions_per_hour_and_in_the_last_day(db_url):
    at = [NOW - timedelta(minutes=5), NOW - timedelta(minutes=20), NOW - timedelta(hours=3, minutes=1),
          NOW - timedelta(hours=30), NOW - timedelta(days=8)]
    outcomes = ["registered", "rejected", "registered", "rejected", "registered"]
    with session_factory(db_url).begin() as s:
        s.add_all(Registration(model_name="m", model_version=str(i), outcome=o, reason="r", created_at=t)
                  for i, (t, o) in enumerate(zip(at, outcomes)))
    with session_factory(db_url)() as s:
        found = overview.decisions(s, now=NOW)
    hours = found["hours"]
    assert len(hours) == 168 and hours[-1]["hour"] == datetime(2026, 12, 2, 10, tzinfo=timezone.utc)
    assert hours[-1] == {"hour": hours[-1]["hour"], "registered": 1, "rejected": 1}
    assert hours[-4]["registered"] == 1 and hours[-4]["hour"].hour == 7  # 07:29 falls in the 07:00 hour
    assert sum(h["rejected"] for h in hours) == 2 and sum(h["registered"] for h in hours) == 2  # 8 days ago is out
    assert found["recent"] == {"registered": 2, "rejected": 1}  # the last 24 h exactly: 30 h ago is out


def test_tokens_by_status_names_every_status(db_url):
    with session_factory(db_url).begin() as s:
        s.add_all([Token(token_id="A", status="draft"), Token(token_id="B", status="draft"), Token(token_id="C", status="registered")])
    with session_factory(db_url)() as s:
        assert overview.tokens_by_status(s) == {"draft": 2, "registered": 1, "deployed": 0, "archived": 0}


def test_a_key_is_in_force_until_revoked_or_expired(db_url):
    sessions = session_factory(db_url)
    with sessions.begin() as s:
        good = keys.create(s, "ops", ("read", "admin")).record["key_id"]
        short = keys.create(s, "short", ("read",), timedelta(minutes=5)).record["key_id"]
    engine = sessions.kw["bind"]
    with engine.begin() as conn:
        caller = overview.key_in_force(conn, good)
        assert (caller.key_id, caller.name, caller.scopes) == (good, "ops", ("read", "admin"))
        assert overview.key_in_force(conn, short) is not None
        assert overview.key_in_force(conn, short, now=datetime.now(timezone.utc) + timedelta(minutes=6)) is None
        assert overview.key_in_force(conn, "00000000") is None
    with sessions.begin() as s:
        keys.revoke(s, good)
    with engine.begin() as conn:
        assert overview.key_in_force(conn, good) is None


def test_counts_and_decisions_are_of_the_tokens_a_caller_may_read(db_url):
    from hokusai_mlflow_plugin.auth import principals

    sessions = session_factory(db_url)
    with sessions.begin() as s:
        alice, bob = principals.create(s, "alice", "user"), principals.create(s, "bob", "user")
        s.add_all([Token(token_id="MINE", status="draft", owner=alice), Token(token_id="OURS", status="registered", owner=alice),
                   Token(token_id="BOBS", status="registered", owner=bob), Token(token_id="NOBODYS", status="draft")])
        s.add_all(Registration(model_name="m", model_version=str(i), token_id=t, outcome=o, reason="r", created_at=NOW - timedelta(hours=1))
                  for i, (t, o) in enumerate([("OURS", "registered"), ("MINE", "rejected"), ("BOBS", "registered"), ("BOBS", "rejected")]))
        her = keys.Caller("k1", "alice-laptop", ("read", "register"), user_id=alice.id)
        admin = keys.Caller("k2", "ops", ("admin",))
    with sessions() as s:
        assert overview.tokens_by_status(s, caller=her) == {"draft": 1, "registered": 1, "deployed": 0, "archived": 0}
        assert overview.decisions(s, now=NOW, caller=her)["recent"] == {"registered": 1, "rejected": 1}
        assert overview.tokens_by_status(s, caller=admin) == {"draft": 2, "registered": 2, "deployed": 0, "archived": 0}
        assert overview.decisions(s, now=NOW, caller=admin)["recent"] == {"registered": 2, "rejected": 2}
        nobody = keys.Caller("k3", "orphan", ("read",))  # a key whose user is gone sees nothing
        assert sum(overview.tokens_by_status(s, caller=nobody).values()) == 0


def test_tokens_with_no_owner_count_once_the_deployment_has_users(db_url):
    from hokusai_mlflow_plugin.auth import principals

    sessions = session_factory(db_url)
    with sessions.begin() as s:
        s.add_all([Token(token_id="A", status="draft"), Token(token_id="B", status="registered")])
        keys.create(s, "ops", ("admin",))  # an operator's key makes no user
    with sessions() as s:
        assert overview.unowned_tokens(s) == 0  # a laptop's stack: nobody is shut out
    with sessions.begin() as s:
        alice = principals.create(s, "alice", "user")
        s.get(Token, "A").owner = alice
    with sessions() as s:
        assert overview.unowned_tokens(s) == 1
