"""Cost of one relay pass with nothing to do, against the size of the outbox (issue 4: found while
measuring the relay's throughput and the fast path).

Run by hand, from the repository root, never in the test suite::

    .venv/bin/python bench/bench_fanout.py --sizes 1000,2000,5000,10000 --analyzed-sizes 20000,50000

Every pass of a relay thread (each poll, each kick, each batch of 100 deliveries) starts with
``Relay.fan_out()``. For each size N this script grows a fresh PostgreSQL token database to N
``token_ready_for_deploy`` events the way production does: ``--step`` events committed at a time
(SQLAlchemy Core), the package's own ``fan_out()`` making their delivery rows for the one webhook
sink, then those rows marked ``delivered``. Then it times ``fan_out()`` and ``claim()`` with nothing
to do, ``--repeat`` times each. By default every event is created "now" (a burst: all of them
within any recency window); ``--spread-hours 72`` spreads their ``created_at`` evenly over the past
three days, as an outbox filled at a steady rate:

* "as left": right after the inserts, as PostgreSQL's planner sees the tables before (auto)vacuum
  has analysed them (this machine's PostgreSQL runs with ``autovacuum = off``; in production the same
  holds between a burst of events and autovacuum's next ANALYZE of the tables);
* "after ANALYZE": once ``ANALYZE`` has run on both tables.

The ``--analyzed-sizes`` are grown with an ANALYZE after every step (as autovacuum would keep the
statistics fresh; without it, growing them would take hours) and measured after ANALYZE only.

It prints the plan PostgreSQL chooses for the fan-out query in both states (the query
``fan_out()`` sends, captured with its parameters, under ``EXPLAIN``), so the cause is visible. A pass that takes longer than ``--give-up`` seconds stops
the "as left" series (the next size would take several times longer).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import benchlib
from benchlib import machine_facts

SINK_SECRET = "whsec_" + "aG9rdXNhaS1iZW5jaC1ldmVudHMtc2VjcmV0LTMyYnl0ZXM="


def fill(url: str, n: int, relay, step: int, analyze: bool = False, spread_hours: float = 0.0) -> float:
    """Grow the outbox to ``n`` events the way production does: ``step`` events committed at a time,
    the package's own ``relay.fan_out()`` making their delivery rows, then those marked delivered
    (as the relay's ``record()`` would); with ``analyze``, ANALYZE after each step, as autovacuum
    would keep the statistics fresh. With ``spread_hours``, the events' ``created_at`` run evenly from
    that long ago up to now (an outbox filled over days); else they are all "now" (a burst).
    Returns the seconds the fan-outs took while growing."""
    from datetime import timedelta

    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.models import Delivery, OutboxEvent, utcnow
    from hokusai_mlflow_plugin.db.session import get_engine

    engine = get_engine(url)
    spent = 0.0
    for start in range(0, n, step):
        now = utcnow()
        with engine.begin() as conn:
            conn.execute(sa.insert(OutboxEvent), [
                {"event_id": str(uuid.uuid4()), "event_type": "token_ready_for_deploy",
                 "created_at": now - timedelta(hours=spread_hours) * (1 - (start + i + 1) / n),
                 "payload": {"token_id": f"TF-{start + i}", "model_name": "m", "model_version": str(start + i)}}
                for i in range(min(step, n - start))
            ])
        t = time.perf_counter()
        while relay.fan_out():
            pass
        spent += time.perf_counter() - t
        with engine.begin() as conn:
            conn.execute(sa.update(Delivery).where(Delivery.status == "pending").values(status="delivered", attempts=1, delivered_at=now))
        if analyze:
            analyze_tables(url)
    return spent


def analyze_tables(url: str) -> None:
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.session import get_engine

    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE hokusai_outbox"))
        conn.execute(sa.text("ANALYZE hokusai_deliveries"))


def fan_out_plan(url: str, relay) -> str:
    """EXPLAIN (no ANALYZE option) of the outbox query that the package's ``fan_out()`` sends,
    captured on the wire with its parameters, so it is right for whichever version is installed."""
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.session import get_engine

    engine = get_engine(url)
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "FROM hokusai_outbox" in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        relay.fan_out()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    if not seen:
        return "    (fan_out() sent no outbox query)"
    statement, parameters = seen[0]
    with engine.connect() as conn:
        return "\n".join("    " + r[0] for r in conn.exec_driver_sql("EXPLAIN " + statement, parameters))


def timed(fn, repeat: int, give_up: float) -> tuple[float, float, int]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
        if times[-1] > give_up * 1000:
            break
    return statistics.median(times), max(times), len(times)


def run_size(n: int, args, analyzed_only: bool) -> list[tuple]:

    from hokusai_mlflow_plugin.db.migrate import upgrade
    from hokusai_mlflow_plugin.db.session import dispose, session_factory
    from hokusai_mlflow_plugin.events.relay import Relay
    from hokusai_mlflow_plugin.events.sinks import WebhookSink
    from tests.harness import create_pg_database, drop_pg_database

    url = create_pg_database("hokusai_bench_fanout")
    out = []
    try:
        upgrade(url)
        sink = WebhookSink("http://127.0.0.1:9/hook", SINK_SECRET)
        relay = Relay(session_factory(url), [sink])
        growing = fill(url, n, relay, args.step, analyze=analyzed_only, spread_hours=args.spread_hours)
        print(f"  outbox {n:>6}: grown {args.step} at a time through fan_out(){' with ANALYZE after each step' if analyzed_only else ''}, "
              f"which took {growing:.1f}s in all", flush=True)
        states = [("after ANALYZE", True)] if analyzed_only else [("as left", False), ("after ANALYZE", True)]
        for label, analyze in states:
            if analyze:
                analyze_tables(url)
            plan = fan_out_plan(url, relay)
            made = relay.fan_out()
            if made:
                raise SystemExit(f"fan_out made {made} rows: the fill is wrong")
            f_med, f_max, f_n = timed(relay.fan_out, args.repeat, args.give_up)
            c_med, c_max, _ = timed(lambda: relay.deliveries.claim(sink.name), args.repeat, args.give_up)
            out.append((n, label, f_med, f_max, f_n, c_med, c_max, plan))
            print(f"  outbox {n:>6}, {label:<13}: fan_out() median {f_med:9.2f} ms (max {f_max:9.2f}, {f_n} runs); "
                  f"claim() median {c_med:7.2f} ms", flush=True)
            if args.plans:
                print(plan)
        sink.close()
    finally:
        dispose(url)
        drop_pg_database(url)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,2000,5000,10000", help="outbox sizes, as left and after ANALYZE (1000,2000,5000,10000)")
    parser.add_argument("--analyzed-sizes", default="20000,50000", help="larger sizes, after ANALYZE only (20000,50000)")
    parser.add_argument("--step", type=int, default=500, help="events committed (and fanned out) at a time while growing (500)")
    parser.add_argument("--spread-hours", type=float, default=0.0,
                        help="created_at of the events spread over this many past hours (0: all now, a burst)")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per state (10)")
    parser.add_argument("--give-up", type=float, default=5.0, help="seconds: a slower pass ends the 'as left' series (5)")
    parser.add_argument("--plans", action="store_true", help="print the fan-out query's plan for each state")
    args = parser.parse_args()

    print(machine_facts(), flush=True)
    from hokusai_mlflow_plugin.db.session import get_engine
    from tests.harness import PG_HOST, PG_PORT

    with get_engine(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres").connect() as conn:
        import sqlalchemy as sa

        print("PostgreSQL " + conn.execute(sa.text("SHOW server_version")).scalar()
              + ", autovacuum " + conn.execute(sa.text("SHOW autovacuum")).scalar()
              + f"; events created {'over the past ' + format(args.spread_hours, 'g') + ' h' if args.spread_hours else 'now (a burst)'}")
    rows = []
    stop_as_left = False
    for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
        if stop_as_left:
            rows += run_size(n, args, analyzed_only=True)
            continue
        got = run_size(n, args, analyzed_only=False)
        rows += got
        if got[0][3] > args.give_up * 1000:
            stop_as_left = True
    for n in [int(x) for x in args.analyzed_sizes.split(",") if x.strip()]:
        rows += run_size(n, args, analyzed_only=True)
    print()
    print(f"{'outbox events':>14}  {'tables':<14}{'fan_out median':>16}{'fan_out max':>14}{'claim median':>14}")
    for n, label, f_med, f_max, f_n, c_med, c_max, plan in rows:
        print(f"{n:>14}  {label:<14}{f_med:>13.2f} ms{f_max:>11.2f} ms{c_med:>11.2f} ms")
    print()
    lasts = {}  # the plan at the largest size of each state
    for n, label, *_, plan in rows:
        lasts[label] = (n, plan)
    for label, (n, plan) in lasts.items():
        print(f"fan-out plan, {label} (outbox {n}):")
        print(plan)
    print(benchlib.finished())


if __name__ == "__main__":
    main()
