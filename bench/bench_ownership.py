"""What ownership (issue 18) costs: the key check, a filtered list against MLflow's own search, and
a decision with provenance. Each figure is a ratio or a difference against a baseline measured in
the same run, interleaved (the machine is shared and noisy: BENCHMARKS.md).

* ``keys``: ``keys.authenticate`` on a connection (PostgreSQL and SQLite, 1,000 other keys in the
  table) and the gateway's ``KeyCheck`` on PostgreSQL (remembered, and on a miss: ``remember=False``
  reads the row on every call), per check, for a key whose row names a user (as every non-admin
  key does since migration 0006) against the same code path for a key row with no user
  (``user_id`` NULL: what every row was before ownership). Goal: under 1 ms.
* ``listing``: ``GET /api/v1/tokens?limit=100`` over 10,000 tokens owned by 100 principals (50
  users, 50 teams; the user under test owns every 100th token, is in one team and has 10 grants,
  5 of them through that team), served by ``webhook_app:create_app()`` under gunicorn (1 worker)
  for that user's key and for an admin key, against MLflow's
  ``GET /api/2.0/mlflow/registered-models/search?max_results=100`` over 10,000 registered models
  (``mlflow server --workers 1``, made with MLflow's own ``SqlAlchemyStore.create_registered_model``).
  The three requests take turns, one at a time. Goal: ours / MLflow's <= 1.0. Prints the page
  query's ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL.
* ``decision``: ``RegistrationService.decide_and_record(facts)`` (facts by hand, no MLflow) for a
  version whose run and logged model were made by a member of the token's owning team (makers
  recorded, grants present), against the same with ``ownership.provenance_refusal`` replaced by a
  function returning None (the decision as it was before provenance), interleaved. Goal: at most
  1 ms more (median and p90).

    .venv/bin/python bench/bench_ownership.py --parts keys,listing,decision --kinds postgresql,sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402  (puts the repository root on sys.path)


class Database:
    """A migrated token database of one kind, dropped (or deleted) on exit."""

    def __init__(self, kind: str, workdir: Path):
        self.kind, self.workdir = kind, workdir

    def __enter__(self) -> str:
        from hokusai_mlflow_plugin.db.migrate import upgrade
        from tests.harness import create_pg_database

        if self.kind == "postgresql":
            self.url = create_pg_database("hokusai_bench_own")
        else:
            self.url = f"sqlite:///{self.workdir / f'tokens-{uuid.uuid4().hex[:8]}.db'}"
        upgrade(self.url)
        return self.url

    def __exit__(self, *exc) -> None:
        from hokusai_mlflow_plugin.db.session import dispose
        from tests.harness import drop_pg_database

        dispose(self.url)
        if self.kind == "postgresql":
            drop_pg_database(self.url)


def interleaved(variants: dict, n: int, warmup: int) -> dict[str, list[float]]:
    """Each variant's callable timed ``warmup + n`` times in turns, the order rotating each round;
    milliseconds, warm-up dropped."""
    names = list(variants)
    out = {name: [] for name in names}
    for i in range(warmup + n):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = variants[name]()
            if i >= warmup:
                out[name].append(elapsed)
    return out


def stopwatch(fn):
    def timed() -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1000
    return timed


# -- 1. the key check ----------------------------------------------------------------------------------


def make_keys(url: str) -> tuple[str, str]:
    """1,000 other keys, a key whose row names its user, and one whose row names none."""
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.auth import keys
    from hokusai_mlflow_plugin.db.models import ApiKey
    from hokusai_mlflow_plugin.db.session import session_factory

    with session_factory(url).begin() as s:
        for i in range(1000):
            keys.create(s, f"other-{i}", ("read",))
        with_user = keys.create(s, "bench-user", ("read",)).key
        no_user = keys.create(s, "bench-none", ("read",)).key
        s.execute(sa.update(ApiKey).where(ApiKey.key_id == no_user[3:11]).values(user_id=None))
        s.execute(sa.text("ANALYZE"))
    return with_user, no_user


def bench_keys(kind: str, args, workdir: Path) -> list[tuple[str, dict, dict]]:
    from hokusai_mlflow_plugin.auth import keys
    from hokusai_mlflow_plugin.auth.key_check import KeyCheck
    from hokusai_mlflow_plugin.db.session import get_engine, read_engine

    rows = []
    with Database(kind, workdir) as url:
        with_user, no_user = make_keys(url)
        engine = read_engine(get_engine(url))

        def authenticate(key):
            def check():
                with engine.begin() as conn:
                    caller = keys.authenticate(conn, key)
                assert (caller.user_id is None) == (key == no_user)
            return stopwatch(check)

        t = interleaved({"user": authenticate(with_user), "none": authenticate(no_user)}, args.checks, 200)
        rows.append((f"keys.authenticate on a connection, {kind}", benchlib.summary(t["user"]), benchlib.summary(t["none"])))
        if kind != "postgresql":
            return rows

        async def gateway() -> None:
            for label, check in (("KeyCheck, a miss (remember=False)", KeyCheck(url, remember=False)),
                                 ("KeyCheck remembered", KeyCheck(url).start())):
                deadline = time.monotonic() + 10
                while check.remember and not check._trusted and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # the revocation watch is listening: memory may be used
                assert not check.remember or check._trusted, "the revocation watch did not start"
                times = {"user": [], "none": []}
                reads = check.reads
                for i in range(200 + args.checks):
                    order = [("user", with_user), ("none", no_user)]
                    for name, key in (order if i % 2 == 0 else order[::-1]):
                        started = time.perf_counter()
                        caller = await check.caller(key)
                        elapsed = (time.perf_counter() - started) * 1000
                        assert (caller.user_id is None) == (name == "none")
                        if i >= 200:
                            times[name].append(elapsed)
                reads = check.reads - reads
                await check.close()
                rows.append((f"{label}, PostgreSQL: {reads} reads / {2 * (200 + args.checks)}",
                             benchlib.summary(times["user"]), benchlib.summary(times["none"])))

        asyncio.run(gateway())
    return rows


def print_keys(rows) -> None:
    print("\n[keys] per check (ms): key row with a user (now) / the same with no user (before ownership)")
    print(f"{'':<62}{'median':>9}{'p99':>9}{'before med':>11}{'before p99':>11}{'ratio med':>10}{'ratio p99':>10}")
    for name, now, before in rows:
        print(f"{name:<62}{now['median']:>9.3f}{now['p99']:>9.3f}{before['median']:>11.3f}{before['p99']:>11.3f}"
              f"{now['median'] / before['median']:>10.3f}{now['p99'] / before['p99']:>10.3f}")


# -- 2. the list, filtered in SQL, against MLflow's own search ------------------------------------------


def fill_owned_tokens(url: str, n: int) -> dict:
    """``n`` tokens, one a second, owned in turn by 100 principals; the user under test,
    ``bench-alice``, owns every 100th, is in team ``bench-alice-team`` (which owns none) and has 10
    grants (5 to herself, 5 to her team) on other owners' tokens. Keys: hers (read) and an admin's."""
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.auth import keys, principals
    from hokusai_mlflow_plugin.db.models import TEAM, USER, TeamMember, Token, TokenGrant, utcnow
    from hokusai_mlflow_plugin.db.session import get_engine, session_factory

    with session_factory(url).begin() as s:
        alice = principals.create(s, "bench-alice", USER)
        owners = [alice.id] + [principals.create(s, f"bench-{'user' if i % 2 else 'team'}-{i:02d}", USER if i % 2 else TEAM).id
                               for i in range(1, 100)]
        own_team = principals.create(s, "bench-alice-team", TEAM)
        principals.add_member(s, "bench-alice-team", "bench-alice")
        for i in range(2, 100, 2):  # each other team has two of the other users
            s.add_all([TeamMember(team_id=owners[i], user_id=owners[(i + 1) % 100 or 1]),
                       TeamMember(team_id=owners[i], user_id=owners[(i + 3) % 100 or 1])])
        alice_key = keys.create(s, "bench-alice-key", ("read",), user="bench-alice").key
        admin_key = keys.create(s, "bench-admin", ("admin",)).key
    start = utcnow() - timedelta(seconds=n)
    rows = [{"token_id": f"OWN-{i:06d}", "status": "draft", "metric_name": "auroc", "baseline_value": 0.8,
             "created_at": start + timedelta(seconds=i), "updated_at": start + timedelta(seconds=i), "owner_id": owners[i % 100]}
            for i in range(n)]
    now = utcnow()
    grants = [{"token_id": f"OWN-{i:06d}", "principal_id": alice.id if j < 5 else own_team.id,
               "permission": "read" if j % 2 else "register", "created_at": now}
              for j, i in enumerate(range(n // 20 + 7, n, n // 10))]  # 10 tokens of other owners, spread out
    with get_engine(url).begin() as conn:
        conn.execute(sa.insert(Token.__table__), rows)
        conn.execute(sa.insert(TokenGrant.__table__), grants)
        for table in ("hokusai_tokens", "hokusai_token_grants", "hokusai_team_members", "hokusai_principals", "hokusai_api_keys"):
            conn.exec_driver_sql(f"ANALYZE {table}")
    return {"alice": alice_key, "admin": admin_key, "alice_visible": n // 100 + len(grants)}


def fill_registered_models(mlflow_db: str, n: int) -> float:
    """``n`` registered models made by MLflow's own store (what ``create_registered_model`` over
    REST runs, without the HTTP hop); the seconds it took."""
    import sqlalchemy as sa
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    started = time.perf_counter()
    store = SqlAlchemyStore(mlflow_db)
    for i in range(n):
        store.create_registered_model(f"bench-model-{i:06d}")
    store.engine.dispose()
    engine = sa.create_engine(mlflow_db.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - started


def page_plan(url: str, key: str) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the token page query that ``page_tokens`` sends for the
    key's caller, captured on the wire with its parameters."""
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.auth import keys
    from hokusai_mlflow_plugin.db.session import get_engine, read_engine, session_factory
    from hokusai_mlflow_plugin.registration import tokens

    engine = get_engine(url)
    with read_engine(engine).connect() as conn:
        caller = keys.authenticate(conn, key)
    seen = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM hokusai_tokens" in statement and "LIMIT" in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        with session_factory(url)() as s:
            tokens.page_tokens(s, limit=100, caller=caller)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = seen[0]
    with engine.connect() as conn:
        plan = [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)]
    return "    " + statement.replace("\n", "\n    ") + "\n\n" + "\n".join("    " + line for line in plan)


def bench_listing(kind: str, args) -> dict:
    import requests

    from hokusai_mlflow_plugin.stack.local import receiver_command
    from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port

    out = {}
    with benchlib.Backend(kind) as b:
        started = time.perf_counter()
        made = fill_owned_tokens(b.db_url, args.rows)
        out["fill_tokens_s"] = time.perf_counter() - started
        out["fill_mlflow_s"] = fill_registered_models(b.mlflow.backend_uri, args.rows)
        if kind == "postgresql":
            out["plan_user"] = page_plan(b.db_url, made["alice"])
            out["plan_admin"] = page_plan(b.db_url, made["admin"])
        port = free_port()
        env = {**os.environ, "HOKUSAI_DATABASE_URL": b.db_url, "HOKUSAI_WEBHOOK_SECRET": "bench", "MLFLOW_TRACKING_URI": b.mlflow.url,
               "HOKUSAI_LOG_LEVEL": "WARNING"}
        api = ManagedProcess("api", receiver_command("127.0.0.1", port, 1), env, b.workdir / "api.log").start()
        try:
            api.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
            ours = f"http://127.0.0.1:{port}/api/v1/tokens?limit=100"
            theirs = f"{b.mlflow.url}/api/2.0/mlflow/registered-models/search?max_results=100"
            http = requests.Session()

            def get(url, key=None):
                headers = {"Authorization": f"Bearer {key}"} if key else {}

                def one():
                    response = http.get(url, headers=headers, timeout=60)
                    if response.status_code != 200:
                        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:300]}")
                return stopwatch(one)

            seen, url = [], ours
            while url:  # every page of the user's, by its next links
                page = http.get(url, headers={"Authorization": f"Bearer {made['alice']}"}, timeout=60).json()
                seen += [t["token_id"] for t in page["items"]]
                url = page["next"] and f"http://127.0.0.1:{port}{page['next']}"
            out["alice_visible"] = len(set(seen))
            assert out["alice_visible"] == made["alice_visible"], (out["alice_visible"], made["alice_visible"])
            assert len(http.get(ours, headers={"Authorization": f"Bearer {made['admin']}"}, timeout=60).json()["items"]) == 100
            assert len(http.get(theirs, timeout=60).json()["registered_models"]) == 100
            variants = {"user": get(ours, made["alice"]), "admin": get(ours, made["admin"]), "mlflow": get(theirs)}
            out["blocks"] = [interleaved(variants, args.requests, args.warmup if block == 0 else 0) for block in range(args.blocks)]
        finally:
            api.stop()
    return out


def print_listing(kind: str, out: dict, args) -> None:
    print(f"\n[listing, {kind}] first page of 100 over {args.rows} tokens / registered models; setup: tokens "
          f"{out['fill_tokens_s']:.1f} s, MLflow's store made {args.rows} registered models in {out['fill_mlflow_s']:.1f} s; "
          f"the user may read {out['alice_visible']} tokens (checked over HTTP, both pages)")
    merged = {name: [x for block in out["blocks"] for x in block[name]] for name in ("user", "admin", "mlflow")}
    s = {name: benchlib.summary(v) for name, v in merged.items()}
    print(benchlib.table([("ours, the user's key (owns 100, 10 grants)", s["user"]), ("ours, an admin key", s["admin"]),
                          ("MLflow registered-models/search", s["mlflow"])], cols=("median", "p90", "p99", "mean", "min")))
    for name in ("user", "admin"):
        per_block = [benchlib.summary(b[name])["median"] / benchlib.summary(b["mlflow"])["median"] for b in out["blocks"]]
        print(f"ratio {name} / MLflow: medians {s[name]['median'] / s['mlflow']['median']:.3f}, p99 "
              f"{s[name]['p99'] / s['mlflow']['p99']:.3f}; per block of {args.requests} (medians): "
              + ", ".join(f"{r:.3f}" for r in per_block))
    for label in ("plan_user", "plan_admin"):
        if label in out:
            print(f"\n  EXPLAIN (ANALYZE, BUFFERS), the {'user' if label == 'plan_user' else 'admin'}'s page:\n{out[label]}")


# -- 3. a decision with provenance against one without -----------------------------------------------------


def bench_decision(kind: str, args, workdir: Path) -> dict:
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.auth import ownership, principals
    from hokusai_mlflow_plugin.auth.keys import Caller
    from hokusai_mlflow_plugin.db.models import MADE_LOGGED_MODEL, MADE_RUN, TEAM, USER, MlflowMaker, Token, TokenGrant, utcnow
    from hokusai_mlflow_plugin.db.session import get_engine, session_factory
    from hokusai_mlflow_plugin.mlflow_io.facts import VersionFacts
    from hokusai_mlflow_plugin.registration.service import RegistrationService

    n = args.decisions + args.decision_warmup
    with Database(kind, workdir) as url:
        with session_factory(url).begin() as s:
            ids = {name: principals.create(s, name, USER).id for name in ("alice", "bob", "carol", "dave")}
            team = principals.create(s, "models-team", TEAM).id
            other = principals.create(s, "other-team", TEAM).id
            principals.add_member(s, "models-team", "alice")
            principals.add_member(s, "models-team", "bob")
            principals.add_member(s, "other-team", "carol")
        now = utcnow()
        token_ids = [f"DEC-{i:05d}" for i in range(2 * n)] + ["DEC-STRANGER"]
        background = [f"BG-{i:05d}" for i in range(args.background)]
        engine = get_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.insert(Token.__table__), [
                {"token_id": t, "status": "draft", "metric_name": "auroc", "baseline_value": 0.8, "created_at": now,
                 "updated_at": now, "owner_id": team if t.startswith("DEC") else (ids["dave"], other)[i % 2]}
                for i, t in enumerate(token_ids + background)])
            conn.execute(sa.insert(TokenGrant.__table__), [  # grants on every token, none of them alice's way in
                {"token_id": t, "principal_id": who, "permission": permission, "created_at": now}
                for t in token_ids[:2 * n] for who, permission in ((ids["carol"], "read"), (other, "register"))])
            alice = Caller("kalice00", "alice-key", ("read", "register"), user_id=ids["alice"])
            made = []
            for i in range(2 * n):
                run, model = uuid.uuid4().hex, "m-" + uuid.uuid4().hex
                ownership.record_maker(conn, MADE_RUN, run, alice)
                ownership.record_maker(conn, MADE_LOGGED_MODEL, model, alice)
                made.append((run, model))
            dave = Caller("kdave000", "dave-key", ("read", "register"), user_id=ids["dave"])
            conn.execute(sa.insert(MlflowMaker.__table__), [  # other people's runs and models
                {"kind": (MADE_RUN, MADE_LOGGED_MODEL)[i % 2], "object_id": uuid.uuid4().hex, "user_id": dave.user_id,
                 "key_id": dave.key_id, "admin": False, "created_at": now} for i in range(args.background)])
            for table in ("hokusai_tokens", "hokusai_token_grants", "hokusai_mlflow_makers", "hokusai_team_members", "hokusai_principals"):
                conn.exec_driver_sql(f"ANALYZE {table}")

        service = RegistrationService(session_factory(url), client=None, provenance="required")
        real = ownership.provenance_refusal
        statements = {"with": 0, "without": 0}
        current = ["with"]

        def count(*_args, **_kwargs):
            statements[current[0]] += 1

        sa.event.listen(engine, "before_cursor_execute", count)
        facts = iter(range(2 * n))  # each decision its own token and version

        def decide(variant):
            def one() -> float:
                i = next(facts)
                run, model = made[i]
                f = VersionFacts(model_name=f"bench-{i}", version="1", source=f"models:/{model}", run_id=run, model_id=model,
                                 version_tags={"hokusai_token_id": token_ids[i]}, run_metrics={"auroc": 0.9})
                ownership.provenance_refusal = real if variant == "with" else (lambda *a, **k: None)
                current[0] = variant
                try:
                    started = time.perf_counter()
                    outcome, _ = service.decide_and_record(f)
                    elapsed = (time.perf_counter() - started) * 1000
                finally:
                    ownership.provenance_refusal = real
                assert outcome.status == "registered", outcome.reason
                return elapsed
            return one

        times = interleaved({"with": decide("with"), "without": decide("without")}, args.decisions, args.decision_warmup)
        sa.event.remove(engine, "before_cursor_execute", count)
        # The measured path is the real one: a version made by someone outside the team is refused.
        stranger = VersionFacts(model_name="bench-stranger", version="1", source=None, run_id=uuid.uuid4().hex, model_id=None,
                                version_tags={"hokusai_token_id": "DEC-STRANGER"}, run_metrics={"auroc": 0.9})
        with engine.begin() as conn:
            ownership.record_maker(conn, MADE_RUN, stranger.run_id, dave)
        refused, _ = service.decide_and_record(stranger)
        assert refused.status == "rejected" and "'dave'" in refused.reason, refused
        paired = [a - b for a, b in zip(times["with"], times["without"])]
        return {"with": times["with"], "without": times["without"], "paired": paired,
                "statements": {k: v / n for k, v in statements.items()}, "refused": refused}


def print_decision(kind: str, out: dict, args) -> None:
    w, wo = benchlib.summary(out["with"]), benchlib.summary(out["without"])
    p = benchlib.summary(out["paired"])
    print(f"\n[decision, {kind}] decide_and_record, {args.decisions} each after {args.decision_warmup} warm-up, interleaved (ms); "
          f"SQL statements per decision: {out['statements']['with']:.1f} with provenance, {out['statements']['without']:.1f} without")
    print(benchlib.table([("with provenance (maker in the owning team)", w), ("provenance_refusal -> None (before)", wo)],
                         cols=("median", "p90", "p99", "mean", "min")))
    print(f"difference with - without: medians {w['median'] - wo['median']:+.3f} ms, p90s {w['p90'] - wo['p90']:+.3f} ms; "
          f"paired (each round's two decisions): median {p['median']:+.3f}, p90 {p['p90']:+.3f}")


def main() -> None:
    import shutil
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="keys,listing,decision")
    parser.add_argument("--kinds", default="postgresql,sqlite", help="for keys and decision")
    parser.add_argument("--listing-kinds", default="postgresql")
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=100, help="per block, each of the three")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--decision-warmup", type=int, default=30)
    parser.add_argument("--background", type=int, default=5000, help="other tokens and other makers in the decision's tables")
    args = parser.parse_args()
    parts, kinds = args.parts.split(","), args.kinds.split(",")
    print(benchlib.machine_facts())
    workdir = Path(tempfile.mkdtemp(prefix="hokusai-bench-own-"))
    try:
        if "keys" in parts:
            rows = []
            for kind in kinds:
                rows += bench_keys(kind, args, workdir)
            print_keys(rows)
            print(f"  ({benchlib.loadavg()})")
        if "listing" in parts:
            for kind in args.listing_kinds.split(","):
                print_listing(kind, bench_listing(kind, args), args)
                print(f"  ({benchlib.loadavg()})")
        if "decision" in parts:
            for kind in kinds:
                print_decision(kind, bench_decision(kind, args, workdir), args)
                print(f"  ({benchlib.loadavg()})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(benchlib.finished())


if __name__ == "__main__":
    main()
