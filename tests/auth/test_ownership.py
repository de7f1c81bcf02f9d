"""Who may do what with a token, on SQLite and PostgreSQL: every caller's right on every token of
two tenants and a shared grant; lists filtered in their query with their pagination whole; hidden
tokens answered as unknown ones; a membership taken away takes its rights at once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys, ownership, principals
from hokusai_mlflow_plugin.auth.keys import Caller
from hokusai_mlflow_plugin.core.errors import CONFLICT, FORBIDDEN, NOT_FOUND
from hokusai_mlflow_plugin.db.models import TEAM, USER, OutboxEvent, Principal, Registration, Token, utcnow
from hokusai_mlflow_plugin.db.session import get_engine, session_factory
from hokusai_mlflow_plugin.events import outbox
from hokusai_mlflow_plugin.registration import tokens

REG, READ = "register", "read"
NAMED = ("ALICE1", "BOB1", "SHARED", "GRANTED", "UNOWNED", "CAROL1")


@dataclass
class World:
    url: str
    callers: dict[str, Caller] = field(default_factory=dict)
    order: list = field(default_factory=list)  # every token id, oldest first

    def session(self):
        return session_factory(self.url)()


def caller_of(url: str, key_name: str, scopes: tuple[str, ...], user: str | None) -> tuple[Caller, str]:
    """A caller as the API sees one: a real key, made and then authenticated; and the key."""
    with session_factory(url).begin() as session:
        made = keys.create(session, key_name, scopes, user=user)
    with get_engine(url).begin() as conn:
        return keys.authenticate(conn, made.key), made.key


@pytest.fixture
def world(db_url) -> World:
    """Users alice, bob, carol; teams A {alice} and B {bob, carol}; tokens ALICE1 (alice's), BOB1
    (B's), SHARED (B's, read granted to alice), GRANTED (B's, register granted to team A), UNOWNED,
    CAROL1 (carol's own), with tokens of each tenant's between them, so that a page filtered after
    its query would come back short."""
    w = World(db_url)
    with session_factory(db_url).begin() as s:
        for name in ("alice", "bob", "carol", "dave"):
            principals.create(s, name, USER)
        for name in ("A", "B"):
            principals.create(s, name, TEAM)
        principals.add_member(s, "A", "alice")
        principals.add_member(s, "B", "bob")
        principals.add_member(s, "B", "carol")
    owners = {"ALICE1": "alice", "BOB1": "B", "SHARED": "B", "GRANTED": "B", "UNOWNED": None, "CAROL1": "carol"}
    start = utcnow() - timedelta(hours=1)
    for i, token_id in enumerate(("F-A0", "ALICE1", "F-B0", "BOB1", "F-A1", "SHARED", "F-B1", "GRANTED", "F-A2",
                                  "UNOWNED", "F-B2", "CAROL1", "F-A3", "F-B3")):
        with session_factory(db_url).begin() as s:
            owner = owners.get(token_id, "alice" if token_id.startswith("F-A") else "B" if token_id.startswith("F-B") else None)
            token = tokens.create(s, token_id, "auroc", 0.8, owner=owner)
            token.created_at = start + timedelta(seconds=i // 2)  # pairs share a time: the id breaks the tie
        w.order.append((i // 2, token_id))
    w.order = [token_id for _, token_id in sorted(w.order)]  # the lists' order: time, then id
    with session_factory(db_url).begin() as s:
        tokens.grant(s, "SHARED", "alice", READ)
        tokens.grant(s, "GRANTED", "A", REG)
    made = {
        "alice": caller_of(db_url, "alice-key", ("read", "register"), "alice"),
        "bob": caller_of(db_url, "bob-key", ("read", "register"), "bob"),
        "carol": caller_of(db_url, "carol-key", ("register",), "carol"),
        "bob-read": caller_of(db_url, "bob-ro", ("read",), "bob"),
        "admin": caller_of(db_url, "ops", ("admin",), None),
        "alice-admin": caller_of(db_url, "alice-ops", ("admin",), "alice"),
        "orphan": caller_of(db_url, "dave-key", ("read", "register"), "dave"),
    }
    w.callers = {who: caller for who, (caller, _) in made.items()}
    with session_factory(db_url).begin() as s:  # dave leaves: his key still authenticates, for no user
        s.delete(principals.find(s, "dave", USER))
    with get_engine(db_url).begin() as conn:
        w.callers["orphan"] = keys.authenticate(conn, made["orphan"][1])
    return w


# Every caller's right on every named token: the table the ownership rules give.
RIGHTS = {
    #              ALICE1 BOB1  SHARED GRANTED UNOWNED CAROL1
    "alice":       (REG,  None, READ,  REG,    None,   None),
    "bob":         (None, REG,  REG,   REG,    None,   None),
    "carol":       (None, REG,  REG,   REG,    None,   REG),
    "bob-read":    (None, READ, READ,  READ,   None,   None),  # bob's rights under a read ceiling
    "admin":       (REG,  REG,  REG,   REG,    REG,    REG),
    "alice-admin": (REG,  REG,  REG,   REG,    REG,    REG),  # admin reaches all, whoever's key
    "orphan":      (None, None, None,  None,   None,   None),  # a non-admin key of no user: nothing
}


def test_every_callers_right_on_every_token(world):
    with world.session() as s:
        got = {who: tuple(ownership.right(s, c, t) for t in NAMED) for who, c in world.callers.items()}
    assert got == RIGHTS
    assert world.callers["orphan"].user_id is None and world.callers["admin"].user_id is None


def test_a_read_scope_is_a_ceiling_and_never_a_pass(world):
    with world.session() as s:
        bob = world.callers["bob"]
        assert ownership.user_right(s, bob.user_id, "BOB1") == REG
        assert ownership.right(s, world.callers["bob-read"], "BOB1") == READ
        # the same user with both keys: the key's scope, not the user's right, limits it
        assert ownership.right(s, bob, "BOB1") == REG
        # a register scope gives nothing on a token the user has no right on
        assert ownership.right(s, bob, "ALICE1") is None
        # an unknown token: no right, for anyone but an admin
        assert ownership.right(s, bob, "NOPE") is None


def _visible(world, who):
    """The token ids ``who`` may read, oldest first, by the rights table (fillers by their owner)."""
    c = world.callers[who]
    with world.session() as s:
        return [t for t in world.order if ownership.right(s, c, t) is not None]


def test_fillers_are_their_owners_alone(world):
    assert _visible(world, "alice") == ["ALICE1", "F-A0", "F-A1", "SHARED", "GRANTED", "F-A2", "F-A3"]
    assert _visible(world, "bob") == ["BOB1", "F-B0", "SHARED", "F-B1", "GRANTED", "F-B2", "F-B3"]
    assert _visible(world, "carol") == ["BOB1", "F-B0", "SHARED", "F-B1", "GRANTED", "CAROL1", "F-B2", "F-B3"]
    assert _visible(world, "admin") == world.order
    assert _visible(world, "orphan") == []


def walk(page, limit):
    """Every page of a paginated list, following the cursor: the rows in order, checking that no
    page comes back short while another follows."""
    seen, cursor, pages = [], None, 0
    while True:
        rows, cursor = page(limit=limit, cursor=cursor)
        pages += 1
        assert pages <= 100, "the cursor never ends"
        if cursor is not None:
            assert len(rows) == limit, f"page {pages} came back with {len(rows)} rows of {limit} and more to come"
        seen.extend(rows)
        if cursor is None:
            return seen


@pytest.mark.parametrize("who", ["alice", "bob", "carol", "bob-read", "admin", "alice-admin", "orphan"])
@pytest.mark.parametrize("limit", [1, 2, 3])
def test_a_token_list_is_the_visible_tokens_with_its_pagination_whole(world, who, limit):
    caller = world.callers[who]
    with world.session() as s:
        found = walk(lambda **kw: tokens.page_tokens(s, caller=caller, **kw), limit)
    ids = [t.token_id for t in found]
    assert len(ids) == len(set(ids))
    assert ids == _visible(world, who)


def test_a_token_lists_filters_compose_with_the_callers_rights(world):
    alice = world.callers["alice"]
    with world.session() as s:
        assert [t.token_id for t in tokens.page_tokens(s, caller=alice, q="f-a")[0]] == ["F-A0", "F-A1", "F-A2", "F-A3"]
        assert [t.token_id for t in tokens.page_tokens(s, caller=alice, q="B")[0]] == []  # BOB1, F-B*: hidden
        assert tokens.page_tokens(s, caller=alice, unowned=True)[0] == []
        assert [t.token_id for t in tokens.page_tokens(s, caller=world.callers["admin"], unowned=True)[0]] == ["UNOWNED"]
        assert [t.token_id for t in tokens.page_tokens(s)[0]] == world.order  # no caller: the operator's CLI


def _add_registrations_and_events(url, token_ids):
    """One registration row and one event per token id (None: a version with no token), oldest
    first, as a decision writes them."""
    with session_factory(url).begin() as s:
        for i, token_id in enumerate(token_ids):
            s.add(Registration(model_name=f"model-{i}", model_version="1", token_id=token_id, outcome="rejected",
                               reason="r"))
            payload = {"token_id": token_id, "model_name": f"model-{i}", "model_version": "1"}
            s.add(OutboxEvent(event_id=str(uuid.uuid4()), event_type="model_registered", payload=payload))
            s.flush()


@pytest.mark.parametrize("who", ["alice", "bob", "carol", "bob-read", "admin", "orphan"])
def test_registrations_and_events_are_filtered_by_their_tokens_with_pagination_whole(world, who):
    # a registration or event of an unknown token, or of none, is an operator's alone
    rows = world.order + ["GHOST", None] + world.order[::-1]
    _add_registrations_and_events(world.url, rows)
    visible = set(_visible(world, who))
    expected = [t for t in rows if t in visible or who in ("admin", "alice-admin")][::-1]  # newest first
    caller = world.callers[who]
    with world.session() as s:
        for limit in (1, 2):
            regs = walk(lambda **kw: tokens.page_registrations(s, caller=caller, **kw), limit)
            assert [r.token_id for r in regs] == expected
            assert len({r.id for r in regs}) == len(regs)
            events = walk(lambda **kw: outbox.page_events(s, caller=caller, **kw), limit)
            assert [e["payload"]["token_id"] for e in events] == expected
            assert len({e["event_id"] for e in events}) == len(events)


def test_an_event_of_a_hidden_token_reads_as_an_unknown_event(world):
    _add_registrations_and_events(world.url, ["BOB1"])
    with world.session() as s:
        [event], _ = outbox.page_events(s)
        assert outbox.event_detail(s, event["event_id"], world.callers["bob"])["payload"]["token_id"] == "BOB1"
        with pytest.raises(outbox.OutboxError) as hidden:
            outbox.event_detail(s, event["event_id"], world.callers["alice"])
        with pytest.raises(outbox.OutboxError) as unknown:
            outbox.event_detail(s, "no-such-event", world.callers["alice"])
    assert hidden.value.kind == unknown.value.kind == NOT_FOUND
    assert str(hidden.value).replace(event["event_id"], "X") == str(unknown.value).replace("no-such-event", "X")


def test_a_hidden_token_reads_exactly_as_an_unknown_one(world):
    alice = world.callers["alice"]
    with world.session() as s:
        with pytest.raises(ownership.OwnershipError) as unknown:
            ownership.token_for(s, alice, "NOPE1")
        for token_id, typed in (("BOB1", "BOB1"), ("UNOWNED", "unowned"), ("CAROL1", " carol1 ")):
            with pytest.raises(ownership.OwnershipError) as hidden:
                ownership.token_for(s, alice, typed, REG)
            assert hidden.value.kind == unknown.value.kind == NOT_FOUND
            assert str(hidden.value) == str(unknown.value).replace("NOPE1", token_id)
            with pytest.raises(ownership.OwnershipError) as hidden_read:
                ownership.token_for(s, alice, typed)
            assert str(hidden_read.value) == str(hidden.value)
        # the admin's CLI says the same of a token that does not exist
        with pytest.raises(tokens.TokenError) as by_admin:
            tokens.get(s, "NOPE1")
        assert str(by_admin.value) == str(unknown.value) and by_admin.value.kind == NOT_FOUND


def test_a_token_that_can_be_read_but_not_registered_is_forbidden_saying_why(world):
    with world.session() as s:
        assert ownership.token_for(s, world.callers["alice"], "SHARED").token_id == "SHARED"
        with pytest.raises(ownership.OwnershipError) as no_grant:
            ownership.token_for(s, world.callers["alice"], "SHARED", REG)
        assert no_grant.value.kind == FORBIDDEN
        assert "SHARED" in str(no_grant.value) and "grant" in str(no_grant.value)
        assert world.callers["alice"].key_id in str(no_grant.value)

        assert ownership.token_for(s, world.callers["bob-read"], "BOB1").token_id == "BOB1"
        with pytest.raises(ownership.OwnershipError) as no_scope:
            ownership.token_for(s, world.callers["bob-read"], "BOB1", REG)
        assert no_scope.value.kind == FORBIDDEN and "--scope register" in str(no_scope.value)

        for who, token_id in (("alice", "ALICE1"), ("alice", "GRANTED"), ("carol", "BOB1"), ("carol", "CAROL1"),
                              ("admin", "UNOWNED"), ("alice-admin", "BOB1")):
            assert ownership.token_for(s, world.callers[who], token_id, REG).token_id == token_id


def test_leaving_a_team_takes_its_rights_away_at_once(world):
    carol = world.callers["carol"]
    with world.session() as s:  # one session throughout: nothing is remembered between questions
        assert ownership.right(s, carol, "BOB1") == REG
        principals.remove_member(s, "B", "carol")
        s.flush()
        assert ownership.right(s, carol, "BOB1") is None
        assert ownership.right(s, carol, "GRANTED") is None
        assert ownership.right(s, carol, "CAROL1") == REG  # her own
        assert [t.token_id for t in tokens.page_tokens(s, caller=carol, limit=100)[0]] == ["CAROL1"]
        s.commit()
    with world.session() as s:
        with pytest.raises(ownership.OwnershipError) as e:
            ownership.token_for(s, carol, "BOB1")
        assert e.value.kind == NOT_FOUND
        assert ownership.right(s, world.callers["bob"], "BOB1") == REG  # bob stays


def test_grants_and_owners_change_rights_at_once(world):
    alice, bob = world.callers["alice"], world.callers["bob"]
    with world.session() as s:
        tokens.grant(s, "SHARED", "alice", REG)  # replaces her read grant
        assert ownership.right(s, alice, "SHARED") == REG
        tokens.revoke_grant(s, "SHARED", "alice")
        assert ownership.right(s, alice, "SHARED") is None
        tokens.revoke_grant(s, "GRANTED", "A")
        assert ownership.right(s, alice, "GRANTED") is None
        tokens.set_owner(s, "ALICE1", "B")
        assert (ownership.right(s, alice, "ALICE1"), ownership.right(s, bob, "ALICE1")) == (None, REG)
        tokens.set_owner(s, "ALICE1", None)
        assert (ownership.right(s, alice, "ALICE1"), ownership.right(s, bob, "ALICE1")) == (None, None)
        assert ownership.right(s, world.callers["admin"], "ALICE1") == REG
        with pytest.raises(tokens.TokenError) as e:
            tokens.revoke_grant(s, "SHARED", "alice")
        assert e.value.kind == NOT_FOUND


def test_a_user_granted_both_ways_gets_the_higher_right(world):
    alice = world.callers["alice"]
    with world.session() as s:
        tokens.grant(s, "BOB1", "alice", READ)
        assert ownership.right(s, alice, "BOB1") == READ
        tokens.grant(s, "BOB1", "A", REG)  # her team's grant is higher than her own
        assert ownership.right(s, alice, "BOB1") == REG


def test_a_name_is_a_user_or_a_team_never_both(world):
    with world.session() as s:
        for name, kind in (("alice", TEAM), ("A", USER), ("B", TEAM), ("bob", USER)):
            with pytest.raises(principals.PrincipalError) as e:
                principals.create(s, name, kind)
            assert e.value.kind == CONFLICT and f"'{name}'" in str(e.value)
        # a key's user named after a team is refused too, not made a second principal
        with pytest.raises(principals.PrincipalError) as e:
            keys.create(s, "A", ("read",))
        assert e.value.kind == CONFLICT
        assert s.scalar(sa.select(sa.func.count()).select_from(Principal).where(Principal.name.in_(["alice", "A"]))) == 2
        # an owner given by name is the one principal of that name
        assert tokens.create(s, "TEAMS", owner="A").owner.kind == TEAM
        with pytest.raises(principals.PrincipalError) as e:
            tokens.create(s, "NOBODYS", owner="nobody")
        assert e.value.kind == NOT_FOUND
        assert s.get(Token, "NOBODYS") is None
