"""The API is what its OpenAPI document says: Schemathesis, a tool nobody here wrote, runs every
phase (examples, coverage, fuzzing, stateful, the last driven by the document's ``links``) with
every check against a live receiver (``webhook_app.create_app()`` over HTTP) on a fresh
PostgreSQL token database seeded with users, a team, tokens, registrations and events, and a real
MLflow server behind it. Once per role: an admin key, an owner's key (alice, who owns tokens, with
``read``, ``register`` and ``deploy``), and a stranger's (every scope but admin, but she owns
nothing and is granted nothing). The bar is 0 failures. The document's links walk a made token to
reading it, finding it in the list, registering a model for it and listing its events.

It runs Schemathesis's own ``schemathesis run`` (its CLI, in a process of its own, as a consumer
would run it against the served document), bounded by examples per operation and by time.

- The seed is fixed in CI (``CI`` set) and random by hand; ``HOKUSAI_SCHEMATHESIS_SEED`` sets it.
  A failure prints Schemathesis's report, with the seed and a ``curl`` of each failing request.
- ``HOKUSAI_SCHEMATHESIS_EXAMPLES`` and ``HOKUSAI_SCHEMATHESIS_TIME`` raise the bounds by hand.

``test_a_loosened_rule_is_caught`` shows that the run has teeth: with the pattern of a token id
dropped from the model that validates it, the run reports the server refusing what the document
now allows.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from hokusai_mlflow_plugin.auth import keys, principals
from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import DEAD, TEAM, USER, Delivery, OutboxEvent, Registration, utcnow
from hokusai_mlflow_plugin.db.session import dispose, session_factory
from hokusai_mlflow_plugin.registration import tokens
from tests.harness import create_pg_database, drop_pg_database, on_ci
from tests.live_stack import ReceiverThread

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# The stateful phase walks the document's links only: Schemathesis's own inference would also link
# GET /me's key_id to revoking that key, and the run would go on with its own key revoked (all 401).
CONFIG = Path(__file__).with_name("schemathesis.toml")
ROLES = ("admin", "owner", "stranger")


def seed() -> int:
    if os.environ.get("HOKUSAI_SCHEMATHESIS_SEED"):
        return int(os.environ["HOKUSAI_SCHEMATHESIS_SEED"])
    return 21 if on_ci() else random.randrange(2**31)


def _seed_world(url: str) -> dict[str, str]:
    """Users, a team, tokens (owned, granted, unowned), registrations and events with a dead
    delivery; a key per role."""
    sessions = session_factory(url)
    with sessions.begin() as s:
        for name in ("alice", "bob", "mallory"):
            principals.create(s, name, USER)
        principals.create(s, "team-b", TEAM)
        principals.add_member(s, "team-b", "bob")
        for i in range(7):  # more than one page at small limits
            tokens.create(s, f"ALICE-{i}", "auroc", 0.8, owner="alice")
        tokens.create(s, "ALICE-NOBAR", owner="alice")
        tokens.create(s, "BOB-1", "rmse", 0.5, owner="team-b")
        tokens.grant(s, "BOB-1", "alice", "read")
        tokens.create(s, "NOBODY-1", "f1", 0.7)
        for i, (token, outcome) in enumerate([("ALICE-0", "rejected"), ("ALICE-1", "rejected"), ("BOB-1", "rejected")]):
            s.add(Registration(model_name=f"model-{token.lower()}", model_version=str(i + 1), token_id=token, outcome=outcome,
                               reason="auroc 0.5 is below the baseline 0.8.", metric_name="auroc", metric_value=0.5,
                               baseline_value=0.8, mlflow_run_id=f"{i:032x}"))
        for token in ("ALICE-0", "ALICE-1", "BOB-1", "NOBODY-1"):
            event_id = str(uuid.uuid4())
            s.add(OutboxEvent(event_id=event_id, event_type="token_ready_for_deploy", created_at=utcnow(),
                              payload={"token_id": token, "model_name": "m", "model_version": "1"}))
            s.flush()
            s.add(Delivery(event_id=event_id, outbox_id=0, sink="console", status=DEAD, attempts=9, last_error="HTTP 500"))
        made = {
            "admin": keys.create(s, "operator", ("admin",)),
            "revoker": keys.create(s, "operator-2", ("admin",)),
            "owner": keys.create(s, "alice-laptop", ("read", "register", "deploy"), user="alice"),
            "stranger": keys.create(s, "mallory-laptop", ("read", "register", "deploy"), user="mallory"),
        }
    dispose(url)
    return {role: key.key for role, key in made.items()}


@pytest.fixture(scope="module")
def contract(mlflow_sqlite):
    """A receiver on a fresh, seeded PostgreSQL token database, with a real MLflow behind it."""
    url = create_pg_database("hokusai_contract")
    upgrade(url)
    role_keys = _seed_world(url)
    receiver = ReceiverThread({
        "HOKUSAI_DATABASE_URL": url, "HOKUSAI_WEBHOOK_SECRETS": ("contract-secret",),
        "MLFLOW_TRACKING_URI": mlflow_sqlite.url, "HOKUSAI_RELAY": False,
    }).start()
    yield {"url": receiver.url, "keys": role_keys, "app": receiver.app}
    receiver.release()
    dispose(url)
    drop_pg_database(url)


def schemathesis_run(base_url: str, key: str, run_seed: int, *extra: str, examples: int | None = None,
                     max_time: int | None = None) -> subprocess.CompletedProcess:
    examples = examples or int(os.environ.get("HOKUSAI_SCHEMATHESIS_EXAMPLES", "8"))
    max_time = max_time or int(os.environ.get("HOKUSAI_SCHEMATHESIS_TIME", "30"))
    command = [
        str(SCHEMATHESIS), "run", f"{base_url}/api/v1/openapi.json",
        "--header", f"Authorization: Bearer {key}",
        "--phases", "examples,coverage,fuzzing,stateful", "--checks", "all",
        "--max-examples", str(examples), "--max-time", str(max_time), "--seed", str(run_seed),
        "--request-timeout", "30", "--workers", "1", "--warnings", "off", *extra,
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    return subprocess.run([command[0], "--config-file", str(CONFIG), *command[1:]], capture_output=True, text=True,
                          timeout=max_time * 4 + 120, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_schemathesis_finds_nothing(contract, role):
    run_seed = seed()
    # Not the admin's revoking: fuzzing reuses the key ids answers hold (GET /keys lists the admin's
    # own), and a run that revoked its own key would go on with 401s; test_revoking_keys runs it.
    extra = ("--exclude-operation-id", "revoke_api_key") if role == "admin" else ()
    done = schemathesis_run(contract["url"], contract["keys"][role], run_seed, *extra)
    assert done.returncode == 0, (
        f"Schemathesis failed as {role} (seed {run_seed}; rerun with HOKUSAI_SCHEMATHESIS_SEED={run_seed}):\n"
        f"{done.stdout[-20000:]}\n{done.stderr[-3000:]}"
    )
    # the run tested what it meant to: its key still works (a run that revoked it would pass on 401s)
    me = requests.get(f"{contract['url']}/api/v1/me", headers={"Authorization": f"Bearer {contract['keys'][role]}"}, timeout=30)
    assert me.status_code == 200, me.text
    if role != "stranger":  # she sees no token, event or registration: no answer of hers has a link to follow
        assert "API Links:" in done.stdout and " 0 covered" not in done.stdout, done.stdout[-3000:]


@pytest.mark.slow
def test_revoking_keys(contract):
    """Revoking keys, with an admin key of its own that neither operation can name (the run makes
    keys and revokes them): every phase, every check, and its key still works at the end."""
    run_seed = seed()
    key = contract["keys"]["revoker"]
    done = schemathesis_run(contract["url"], key, run_seed, "--include-operation-id", "revoke_api_key",
                            "--include-operation-id", "create_api_key", max_time=15)
    assert done.returncode == 0, (
        f"Schemathesis failed revoking keys (seed {run_seed}; rerun with HOKUSAI_SCHEMATHESIS_SEED={run_seed}):\n"
        f"{done.stdout[-20000:]}\n{done.stderr[-3000:]}"
    )
    me = requests.get(f"{contract['url']}/api/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert me.status_code == 200, me.text


@pytest.mark.slow
def test_a_loosened_rule_is_caught(contract, monkeypatch):
    """The token id's pattern dropped from the model that validates ``POST /tokens`` (and so from
    the document): the server's domain still refuses an id like ``a b``, and Schemathesis reports it."""
    from pydantic.fields import FieldInfo

    from tests.live_stack import ReceiverThread
    from webhook_app.api import schemas

    loose = FieldInfo.merge_field_infos(schemas.TokenCreate.model_fields["token_id"])
    loose.metadata = [m for m in loose.metadata if not hasattr(m, "pattern")]
    monkeypatch.setitem(schemas.TokenCreate.model_fields, "token_id", loose)
    schemas.TokenCreate.model_rebuild(force=True)
    try:
        receiver = ReceiverThread({**contract["app"].config, "HOKUSAI_RELAY": False}).start()
        try:
            done = schemathesis_run(receiver.url, contract["keys"]["admin"], 21, "--include-operation-id", "create_token",
                                    "--max-failures", "1", examples=30, max_time=20)
        finally:
            receiver.release()
    finally:
        monkeypatch.undo()
        schemas.TokenCreate.model_rebuild(force=True)
    assert done.returncode != 0, done.stdout[-5000:]
    assert "ST202 Schema-valid request rejected" in done.stdout and "POST /api/v1/tokens" in done.stdout, done.stdout[-5000:]
