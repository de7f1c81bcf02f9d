"""The receiver's time per ``model_version.created``, part by part (issue 3, target: our own work
under 5 ms median on PostgreSQL).

Run by hand, from the repository root, never in the test suite::

    .venv/bin/python bench/bench_receiver.py --n 200 --full 50 --baseline 200 --isolated 200

For each kind (``--kinds sqlite,postgresql``) it starts a real ``mlflow server`` (harness
``MlflowServer``, the ``hokusai+`` registry store, MLflow's backend of the same kind) and a migrated
token database of that kind. Outside any timed region it makes ``--warmup`` + ``--n`` fresh model
versions, each with its own draft token: a run with the ``hokusai_*`` tags and ``auroc`` = 0.9, a
finalised LoggedModel with the same tags, then ``create_model_version(source="models:/m-...",
model_id=...)`` exactly as ``log_model(registered_model_name=...)`` sends it (the ``hokusai+`` store
stamps the token on the version). No webhook is installed: this script alone decides them.

Then, per version, it runs the steps of ``RegistrationService.register`` one by one, in its order,
on one service built as ``webhook_app.views.init_app`` builds it, and times each with
``time.perf_counter`` (wall) and ``time.thread_time`` (this thread's CPU):

* (a) ``webhook_app.signature.verify`` on the body MLflow sends (``json.dumps`` of the
  ``model_version.created`` event, about 250 bytes) with the headers MLflow's delivery carries, as
  the werkzeug ``EnvironHeaders`` object Flask hands the view; then ``parse_event`` (a2);
* (c1) the registration pre-check ``RegistrationService.find`` (one SELECT outside any
  transaction);
* (b) the MLflow look-ups ``mlflow_facts.fetch`` (get_model_version, get_logged_model, get_run);
* (c2) the decide-and-record transaction ``RegistrationService.decide_and_record`` (token read,
  decision, then compare-and-set, registration row, two outbox rows and, on PostgreSQL, their
  NOTIFY: one statement on PostgreSQL, four on SQLite; commit);
* (d) for reference, ``mlflow_facts.tag_outcome`` (two MLflow writes after the commit; the
  receiver's answer waits for them, but they are MLflow's time, not ours).

"Our own work" is a + a2 + c1 + c2: everything the receiver spends on a delivery except talking to
MLflow. Every outcome must be ``registered`` (checked). The first ``--warmup`` versions are
decided the same way and not counted (connection pools, first-use imports).

``--baseline N`` decides N more fresh versions, spread evenly among the others, with c1 and c2 done
by ``OldOrmPath`` below instead: a copy of the previous code path (837e842: the ORM unit of work, a
``pool_pre_ping`` engine on PostgreSQL, one ``pg_notify`` per event), same a, a2, b and d, so that
the speed-up is a ratio measured in one run.

``--isolated N`` (PostgreSQL only) runs c1 + c2 N more times per variant, back to back on synthetic
``VersionFacts`` (no MLflow calls in between, fresh draft tokens), interleaving three variants so
that their ratios are measured in one run: as shipped; as shipped on an engine with
``pool_pre_ping`` (what the pre-ping costs); and ``OldOrmPath``.

``--full N`` decides N more fresh versions through the whole Flask view (``app.test_client()``
POST of the signed body; no HTTP socket), spread evenly among the others, and reports that total
beside the sum of the parts, so the Flask/werkzeug share is visible (the view's INFO log line is
turned off). ``--profile`` prints cProfile's top entries for c1 + c2 summed over
the timed versions of each kind. SQL statements sent per step are counted with SQLAlchemy's
``before_cursor_execute`` (pool pre-ping ``SELECT 1``, psycopg's BEGIN and COMMIT are not cursor
executes and are not in that count; SQLite's BEGIN is).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
import uuid

import benchlib
from benchlib import (
    Backend,
    create_version,
    ensure_registered_model,
    machine_facts,
    prepare,
    summary,
    table,
)

SECRET = "bench-receiver-secret"
TARGET_MS = 5.0

PARTS = [
    ("a", "(a) signature verify"),
    ("a2", "(a2) parse_event"),
    ("c1", "(c1) pre-check find"),
    ("b", "(b) MLflow look-ups fetch"),
    ("c2", "(c2) decide_and_record txn"),
    ("d", "(d) tag_outcome (MLflow writes)"),
]


def environ_headers(body: bytes, url_host: str):
    """The request headers as Flask's view sees them: werkzeug ``EnvironHeaders`` over a WSGI environ."""
    from werkzeug.datastructures import EnvironHeaders
    from werkzeug.test import EnvironBuilder

    headers = benchlib.mlflow_headers(body, SECRET, host=url_host)
    environ = EnvironBuilder(path="/webhooks/mlflow", method="POST", headers=headers, data=body).get_environ()
    return EnvironHeaders(environ), headers


class StatementCounter:
    def __init__(self, engine):
        import sqlalchemy as sa

        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, *args, **kwargs):
        self.count += 1


def run_kind(kind: str, args) -> dict:
    from mlflow import MlflowClient

    from hokusai_mlflow_plugin.db.errors import guarded
    from hokusai_mlflow_plugin.db.session import get_engine
    from hokusai_mlflow_plugin.mlflow_io import facts as mlflow_facts
    from hokusai_mlflow_plugin.registration.service import RegistrationService
    from webhook_app.signature import parse_event, verify

    with Backend(kind) as b:
        old_n = args.baseline
        total = args.warmup + args.n + args.full + old_n
        t0 = time.perf_counter()
        prepared = prepare(b.client, b.sessions, total, "bench-receiver", tag="BR")
        name = f"bench-receiver-{uuid.uuid4().hex[:8]}"
        ensure_registered_model(b.client, name)
        versions = [create_version(b.client, name, p) for p in prepared]
        print(f"[{kind}] prepared {total} tokens, runs, LoggedModels and versions in {time.perf_counter() - t0:.1f}s "
              f"(load average {benchlib.loadavg()})", flush=True)

        # The service exactly as webhook_app.views.init_app builds it (no after-commit callbacks).
        client = MlflowClient(tracking_uri=b.mlflow.url, registry_uri=b.mlflow.url)
        service = RegistrationService(b.sessions, client)
        counter = StatementCounter(get_engine(b.db_url))
        secrets = (SECRET,)
        host = b.mlflow.url.split("//")[1]
        profile = cProfile.Profile() if args.profile else None
        old = OldOrmPath(b) if old_n else None

        modes = ("shipped", "old")
        wall = {m: {k: [] for k, _ in PARTS} for m in modes}
        cpu = {m: {k: [] for k, _ in PARTS} for m in modes}
        stmts = {"c1": [], "c2": []}
        body_sizes = []
        # The whole-view and the baseline registrations are spread evenly among the shipped
        # part-by-part ones, so that all of them meet the same conditions.
        full_view = make_full_view(b) if args.full else None
        slots = sorted(
            [(i / args.n, "shipped") for i in range(args.n)]
            + [((j + 0.5) / args.full, "full") for j in range(args.full)]
            + [((j + 0.25) / old_n, "old") for j in range(old_n)]
        )
        order = ["shipped"] * args.warmup + ["old"] * (args.warmup if old_n else 0) + [mode for _, mode in slots]
        prepared += prepare(b.client, b.sessions, args.warmup if old_n else 0, "bench-receiver", tag="BR")
        versions += [create_version(b.client, name, p) for p in prepared[len(versions):]]
        full: list[float] = []
        for i, mode in enumerate(order):
            p, version = prepared[i], versions[i]
            if mode == "full":
                full.append(full_view(name, p, version))
                continue
            body = benchlib.created_body(name, version, f"models:/{p.model_id}")
            headers, _ = environ_headers(body, host)
            counted = i >= args.warmup * (2 if old_n else 1)
            marks = []

            def mark(marks=marks):
                marks.append((time.perf_counter(), time.thread_time()))

            mark()
            delivery = verify(body, headers, secrets)
            mark()
            event = parse_event(body)
            mark()
            n0 = counter.count
            if mode == "old":
                earlier = old.registration(name, version)
            else:
                if profile and counted:
                    profile.enable()
                earlier = guarded(service.find, name, version)
                if profile and counted:
                    profile.disable()
            mark()
            n1 = counter.count
            facts = mlflow_facts.fetch(service.client, event["data"]["name"], event["data"]["version"])
            mark()
            n2 = counter.count
            if mode == "old":
                status, reason = old.decide_and_record(facts, delivery.delivery_id)
            else:
                if profile and counted:
                    profile.enable()
                outcome, _ = guarded(service.decide_and_record, facts, delivery.delivery_id)
                if profile and counted:
                    profile.disable()
                status, reason = outcome.status, outcome.reason
            mark()
            n3 = counter.count
            mlflow_facts.tag_outcome(service.client, name, version, status, reason)
            mark()
            if earlier is not None or status != "registered":
                raise SystemExit(f"[{kind}] {name} v{version} ({mode}): expected a fresh registration, got {earlier} / {status}")
            if counted:
                body_sizes.append(len(body))
                for j, (key, _) in enumerate(PARTS):
                    wall[mode][key].append((marks[j + 1][0] - marks[j][0]) * 1000)
                    cpu[mode][key].append((marks[j + 1][1] - marks[j][1]) * 1000)
                if mode == "shipped":
                    stmts["c1"].append(n1 - n0)
                    stmts["c2"].append(n3 - n2)
        if old is not None:
            old.dispose()

        own_keys = ("a", "a2", "c1", "c2")

        def own_of(values, mode):
            return [sum(values[mode][k][i] for k in own_keys) for i in range(len(values[mode]["a"]))]

        own = own_of(wall, "shipped")
        own_cpu = own_of(cpu, "shipped")
        parts_total = [sum(wall["shipped"][k][i] for k, _ in PARTS) for i in range(args.n)]

        print()
        print(f"[{kind}] {args.n} registrations (after {args.warmup} warm-up), body {body_sizes[0]} bytes; "
              f"wall time per part; load average now {benchlib.loadavg()}")
        rows = [(label, summary(wall["shipped"][k])) for k, label in PARTS]
        rows.append(("our own work (a+a2+c1+c2)", summary(own)))
        rows.append(("all parts (a..d)", summary(parts_total)))
        if full:
            rows.append((f"whole Flask view ({len(full)} more, interleaved)", summary(full)))
        print(table(rows))
        print()
        print(f"[{kind}] thread CPU time per part (ms, median): " + ", ".join(
            f"{k} {summary(cpu['shipped'][k])['median']:.3f}" for k, _ in PARTS) + f", own work {summary(own_cpu)['median']:.3f}")
        print(f"[{kind}] SQL statements per step (cursor executes): pre-check {summary(stmts['c1'])['median']:.0f}, "
              f"decide-and-record {summary(stmts['c2'])['median']:.0f}")
        old_own = None
        if old_n:
            old_own = summary(own_of(wall, "old"))
            print()
            print(f"[{kind}] baseline, {old_n} more registrations interleaved with the above: c1 and c2 by "
                  f"OldOrmPath (the previous ORM code path, pre-ping engine)")
            rows = [(f"old {label}", summary(wall["old"][k])) for k, label in PARTS if k in ("c1", "b", "c2")]
            rows.append(("old our own work (a+a2+c1+c2)", old_own))
            print(table(rows))
            print(f"[{kind}] old / shipped, same run: c1 {summary(wall['old']['c1'])['median'] / summary(wall['shipped']['c1'])['median']:.2f}x, "
                  f"c2 {summary(wall['old']['c2'])['median'] / summary(wall['shipped']['c2'])['median']:.2f}x, "
                  f"own work median {old_own['median'] / summary(own)['median']:.2f}x, p99 {old_own['p99'] / summary(own)['p99']:.2f}x; "
                  f"old own-work CPU median {summary(own_of(cpu, 'old'))['median']:.3f} ms")
        if args.isolated and kind == "postgresql":
            iso = run_isolated(b, args.isolated)
            print()
            print(f"[{kind}] back to back, no MLflow calls in between, {args.isolated} each, variants interleaved "
                  f"(load average now {benchlib.loadavg()}):")
            rows = []
            for label, parts in iso.items():
                rows.append((f"{label}: c1 pre-check", summary(parts["c1"])))
                rows.append((f"{label}: c2 txn", summary(parts["c2"])))
                rows.append((f"{label}: c1 + c2", summary([x + y for x, y in zip(parts["c1"], parts["c2"])])))
            print(table(rows))
        if profile:
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(18)
            print(f"[{kind}] cProfile of c1 + c2 over {args.n} registrations, by own time:")
            print("\n".join(out.getvalue().splitlines()[:45]))
        own_median = summary(own)["median"]
        return {"kind": kind, "own_median": own_median, "own_p99": summary(own)["p99"],
                "old_median": old_own["median"] if old_own else None, "old_p99": old_own["p99"] if old_own else None}


class OldOrmPath:
    """The previous ``RegistrationService.find`` and ``_decide_and_record`` (commit 837e842,
    fresh versions only), kept here as the same-run baseline: the ORM unit of work, on an engine with
    ``pool_pre_ping`` on PostgreSQL (as ``db.session`` made them), and one ``SELECT pg_notify`` per
    event. Not package code."""

    def __init__(self, b: Backend):
        import sqlalchemy as sa
        from sqlalchemy.orm import sessionmaker

        self.engine = None
        self.sessions = b.sessions  # SQLite: the package's engine, which has not changed
        if sa.make_url(b.db_url).get_backend_name() == "postgresql":
            url = sa.make_url(b.db_url).set(drivername="postgresql+psycopg")
            self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
            self.sessions = sessionmaker(bind=self.engine, expire_on_commit=False)

    def registration(self, model_name: str, version: str):
        with self.sessions() as session:
            return self._find(session, model_name, version)

    def decide_and_record(self, facts, delivery_id: str | None) -> tuple[str, str]:
        from hokusai_mlflow_plugin.db.models import OUTCOME_REGISTERED, Registration, Token
        from hokusai_mlflow_plugin.registration.decision import decide, token_id_of
        from hokusai_mlflow_plugin.registration.records import registration_events
        from tests.harness import notify  # what the old code's events.notify did

        with self.sessions.begin() as session:
            token_id, _ = token_id_of(facts)
            token = session.get(Token, token_id) if token_id else None
            decision = decide(facts, token)
            reg = Registration(model_name=facts.model_name, model_version=facts.version)
            session.add(reg)
            self._fill(reg, decision, delivery_id)
            session.flush()
            if decision.outcome == OUTCOME_REGISTERED and not self._claim(session, decision, facts):
                winner = session.get(Token, decision.token_id, populate_existing=True)
                self._fill(reg, decide(facts, winner), delivery_id)
            if reg.outcome == OUTCOME_REGISTERED:
                events = registration_events(reg)
                session.add_all(events)
                notify(session, [e.event_id for e in events])
            return reg.outcome, reg.reason

    @staticmethod
    def _find(session, model_name, version):
        import sqlalchemy as sa
        from hokusai_mlflow_plugin.db.models import Registration

        query = sa.select(Registration).where(Registration.model_name == model_name, Registration.model_version == version)
        return session.scalars(query).one_or_none()

    @staticmethod
    def _fill(reg, decision, delivery_id) -> None:
        from hokusai_mlflow_plugin.db.models import utcnow

        reg.token_id, reg.outcome, reg.reason = decision.token_id, decision.outcome, decision.reason
        reg.metric_name, reg.metric_value, reg.baseline_value = decision.metric_name, decision.metric_value, decision.baseline_value
        reg.mlflow_run_id, reg.delivery_id, reg.created_at = decision.run_id, delivery_id, utcnow()

    @staticmethod
    def _claim(session, decision, facts) -> bool:
        import sqlalchemy as sa
        from hokusai_mlflow_plugin.db.models import DRAFT, REGISTERED, Token, utcnow

        result = session.execute(
            sa.update(Token)
            .where(Token.token_id == decision.token_id, Token.status == DRAFT)
            .values(status=REGISTERED, metric_name=decision.metric_name, baseline_value=decision.baseline_value,
                    metric_value=decision.metric_value, mlflow_run_id=decision.run_id, model_name=facts.model_name,
                    model_version=facts.version, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def run_isolated(b: Backend, n: int) -> dict[str, dict[str, list[float]]]:
    """c1 + c2 back to back on synthetic facts, three variants interleaved (see the docstring)."""
    import sqlalchemy as sa
    from sqlalchemy.orm import sessionmaker

    from hokusai_mlflow_plugin.db.models import Token
    from hokusai_mlflow_plugin.mlflow_io.facts import VersionFacts
    from hokusai_mlflow_plugin.registration.service import RegistrationService

    url = sa.make_url(b.db_url).set(drivername="postgresql+psycopg")
    pinged = sessionmaker(bind=sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5}), expire_on_commit=False)
    old = OldOrmPath(b)

    def shipped(svc):
        return svc.find, lambda facts, delivery_id: svc.decide_and_record(facts, delivery_id)[0].status

    variants = [
        ("as shipped", *shipped(RegistrationService(b.sessions, None))),
        ("as shipped + pool_pre_ping", *shipped(RegistrationService(pinged, None))),
        ("old ORM path (OldOrmPath)", old.registration, lambda facts, delivery_id: old.decide_and_record(facts, delivery_id)[0]),
    ]
    warm = 10
    token_ids = [f"BI-{uuid.uuid4().hex[:12].upper()}" for _ in range((n + warm) * len(variants))]
    with b.sessions.begin() as s:
        s.add_all(Token(token_id=t, status="draft", metric_name=benchlib.METRIC, baseline_value=benchlib.BASELINE) for t in token_ids)
    out = {label: {"c1": [], "c2": []} for label, _, _ in variants}
    name = f"bench-isolated-{uuid.uuid4().hex[:8]}"
    try:
        for i, token_id in enumerate(token_ids):
            label, c1, c2 = variants[i % len(variants)]
            tags = benchlib.hokusai_tags(token_id)
            facts = VersionFacts(model_name=name, version=str(i + 1), source="models:/m-0", run_id="0" * 32, model_id="m-0",
                                 version_tags=tags, model_tags=tags, run_tags=tags, run_metrics={benchlib.METRIC: benchlib.VALUE})
            t0 = time.perf_counter()
            earlier = c1(name, facts.version)
            t1 = time.perf_counter()
            status = c2(facts, str(uuid.uuid4()))
            t2 = time.perf_counter()
            if earlier is not None or status != "registered":
                raise SystemExit(f"isolated {label}: {status}")
            if i >= warm * len(variants):
                out[label]["c1"].append((t1 - t0) * 1000)
                out[label]["c2"].append((t2 - t1) * 1000)
    finally:
        pinged.kw["bind"].dispose()
        old.dispose()
    # Every variant wrote the same rows: check them through the ORM.
    with b.sessions() as s:
        tokens = s.scalars(sa.select(Token).where(Token.token_id.in_(token_ids))).all()
        if any(t.status != "registered" or t.model_name != name for t in tokens):
            raise SystemExit("isolated: some token was not registered")
    return out


def make_full_view(b: Backend):
    """Whole-view time: ``app.test_client().post`` of the signed body (no socket), one fresh version."""
    from webhook_app import create_app

    app = create_app({
        "HOKUSAI_WEBHOOK_SECRETS": (SECRET,),
        "HOKUSAI_DATABASE_URL": b.db_url,
        "MLFLOW_TRACKING_URI": b.mlflow.url,
        "HOKUSAI_RELAY": False,
    })
    import logging

    for logger in ("webhook_app", "hokusai_mlflow_plugin"):  # one INFO line per delivery otherwise
        logging.getLogger(logger).setLevel(logging.WARNING)
    http = app.test_client()

    def post(name: str, p, version: str) -> float:
        body = benchlib.created_body(name, version, f"models:/{p.model_id}")
        headers = benchlib.mlflow_headers(body, SECRET)
        t0 = time.perf_counter()
        response = http.post("/webhooks/mlflow", data=body, headers=headers)
        t1 = time.perf_counter()
        if response.status_code != 200 or response.json["status"] != "registered":
            raise SystemExit(f"{name} v{version}: {response.status_code} {response.get_data(as_text=True)}")
        return (t1 - t0) * 1000

    return post


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="timed registrations per database (200)")
    parser.add_argument("--warmup", type=int, default=10, help="registrations decided first, not counted (10)")
    parser.add_argument("--full", type=int, default=50, help="more registrations through the whole Flask view (50; 0: none)")
    parser.add_argument("--baseline", type=int, default=200, help="registrations by the old ORM code path, interleaved (200; 0: none)")
    parser.add_argument("--isolated", type=int, default=200, help="back-to-back what-if runs per variant, PostgreSQL (200; 0: none)")
    parser.add_argument("--kinds", default="sqlite,postgresql", help="token database kinds (sqlite,postgresql)")
    parser.add_argument("--profile", action="store_true", help="cProfile c1 + c2 and print the top entries")
    args = parser.parse_args()

    print(machine_facts(), flush=True)
    results = [run_kind(kind.strip(), args) for kind in args.kinds.split(",") if kind.strip()]
    print()
    for r in results:
        verdict = "met" if r["own_median"] < TARGET_MS else "MISSED"
        note = "  <- the target" if r["kind"] == "postgresql" else ""
        baseline = (f"; old ORM path, same run: median {r['old_median']:.3f} ms, p99 {r['old_p99']:.3f} ms "
                    f"({r['old_median'] / r['own_median']:.2f}x)" if r["old_median"] is not None else "")
        print(f"target own work < {TARGET_MS:g} ms median, {r['kind']}: {verdict} "
              f"(median {r['own_median']:.3f} ms, p99 {r['own_p99']:.3f} ms){baseline}{note}")
    print(benchlib.finished())


if __name__ == "__main__":
    main()
