"""Events (issue 4): the fast path's latency from the registration commit to the downstream
webhook's 2xx (target: p99 under 100 ms on loopback), and the relay's throughput to a webhook sink
and to Redis with one and two workers on PostgreSQL (target: at least 300 events/s to the webhook).

Run by hand, from the repository root, never in the test suite::

    .venv/bin/python bench/bench_events.py --n 200 --events 2000

Part 1, fast path (``--kinds postgresql,sqlite``; ``--n 0`` skips it). A real ``mlflow server``
(harness ``MlflowServer``, no webhook installed) and a migrated token database of the same kind;
``--warmup`` + ``--n`` fresh versions with their own draft tokens, made beforehand
(``benchlib.prepare``). The receiver app is ``webhook_app.create_app`` with ``HOKUSAI_SETTINGS`` from
``load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": <sink>, "HOKUSAI_EVENT_WEBHOOK_SECRET":
"whsec_..."})``, so ``views.init_app`` starts its relay threads and appends ``relay.kick`` to
``service.after_commit``. Each version is posted to the app (``app.test_client()``, the signed
body MLflow sends), ``--gap`` seconds apart (0: back to back, the receiver under load). Times, all
``time.perf_counter`` in this process:

* commit: a first callback inserted at the head of ``service.after_commit``, which ``register()``
  calls with the committed event ids right after the transaction commits (before the relay's
  kick and before the version is tagged in MLflow);
* 2xx: the loopback sink's handler right after it wrote its ``200`` (and, for reference, the
  relay's ``sink.send`` returning).

The relay instance's ``fan_out``, ``claim``, ``renew``, ``record`` and ``record_delivered`` and
``mlflow_facts.tag_outcome`` are timed too, to say how much of commit -> 2xx is spent in the
relay's database steps and how much of it overlaps the request thread's two MLflow writes (CPU and
GIL contention on 2 cores). The receiver's INFO log lines are turned off.

Part 2, throughput (``--events 0`` skips it), on PostgreSQL only. Per sink (webhook, Redis) and
worker count (1, 2): a fresh database, the workers started as ``python -m hokusai_mlflow_plugin
events relay`` SUBPROCESSES (each in its own process group, LISTEN/NOTIFY on), idle and listening
(their "Relaying to" line, then 1.5 s). Then ``--events`` ``token_ready_for_deploy`` rows are
committed to the outbox in one transaction with a NOTIFY per event, as registrations write them.
Delivery time runs from that commit to the last event's arrival at the sink (webhook: the sink's
clock; Redis: the last stream entry id, Redis's own millisecond clock, against this process's wall
clock at the commit). Start-up and import time are outside it. The steady rate between the 10th and
90th percentile arrivals is reported too, and every delivery must be ``delivered`` exactly once.

The webhook sink is a minimal asyncio HTTP/1.1 server in this process (keep-alive, TCP_NODELAY,
``200`` with ``Content-Length: 0`` as soon as the body is read; ``http.server`` costs several times
more per request on this machine). Its own capacity, and Redis's for
plain sequential ``XADD``, are measured first with 1 and 2 client subprocesses sending the same
body and headers (``requests.Session`` as the shipped sink sends, and plain ``http.client`` on one
keep-alive connection, a cheaper client; ``redis.Redis`` for Redis), so that the sinks are shown
not to be the bottleneck: with a sequential client, what the client costs counts too. ``--breakdown N`` then times the relay's steps (``fan_out``, ``claim``, ``renew``,
``send``, ``record``, ``record_delivered``) per delivery on N events, with one ``Relay`` driven by
``run_once`` in this process, to show what dominates.

Every throughput run and the breakdown are made twice, interleaved (``--no-baseline`` turns the
second off): the relay as shipped, and the baseline of ``bench/baseline_relay.py``, the same relay
with its previous per-delivery bookkeeping (a renew transaction before and a record transaction
after every send, ``requests`` reading the environment per POST), so that the gain is a ratio
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
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

RECEIVER_SECRET = "bench-events-receiver-secret"
SINK_SECRET = "whsec_" + "aG9rdXNhaS1iZW5jaC1ldmVudHMtc2VjcmV0LTMyYnl0ZXM="
TARGET_LATENCY_P99_MS = 100.0
TARGET_RATE = 300.0
REDIS_URL = "redis://127.0.0.1:6379/0"


# -- the fast loopback sink ----------------------------------------------------------------------


class FastSink:
    """A minimal HTTP/1.1 keep-alive sink on loopback (asyncio, one event-loop thread): reads the
    request head and body, writes ``200`` with ``Content-Length: 0`` at once, then records
    (time, webhook-id, body). Much cheaper per request than ``http.server``."""

    def __init__(self):
        self.arrivals: list[tuple[float, str, bytes]] = []
        self.cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, name="bench-sink", daemon=True).start()
        ready.wait()

    async def _handle(self, reader, writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, webhook_id = 0, None
                for line in head.split(b"\r\n")[1:]:
                    key, _, value = line.partition(b":")
                    key = key.strip().lower()
                    if key == b"content-length":
                        length = int(value)
                    elif key == b"webhook-id":
                        webhook_id = value.strip().decode()
                body = await reader.readexactly(length) if length else b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # sent at once: the buffer is empty
                answered = time.perf_counter()
                with self.cond:
                    self.arrivals.append((answered, webhook_id, body))
                    self.cond.notify_all()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    def count(self) -> int:
        with self.cond:
            return len(self.arrivals)

    def reset(self) -> None:
        with self.cond:
            self.arrivals.clear()

    def wait(self, predicate, timeout: float):
        """The first arrival (time, id, body) matching ``predicate(body)``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for arrival in self.arrivals[seen:]:
                    if predicate(arrival[2]):
                        return arrival
                seen = len(self.arrivals)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.arrivals) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


def sample_event() -> tuple[str, str, dict[str, str]]:
    """(event id, envelope body, Standard Webhooks headers) of a realistic token_ready_for_deploy."""
    from hokusai_mlflow_plugin.db.models import OutboxEvent, utcnow
    from hokusai_mlflow_plugin.events.envelope import envelope_json
    from hokusai_mlflow_plugin.events.sinks import WebhookSink

    event = OutboxEvent(event_id=str(uuid.uuid4()), event_type="token_ready_for_deploy", payload=payload(0), created_at=utcnow())
    body = envelope_json(event)
    headers = WebhookSink("http://127.0.0.1:9/hook", SINK_SECRET).headers(event.event_id, body)
    return event.event_id, body, headers


def payload(i: int) -> dict:
    return {"token_id": f"TP-{i:06d}", "mlflow_run_id": uuid.uuid4().hex, "model_name": "bench-events-model",
            "model_version": str(i + 1), "metadata": {"metric_name": "auroc", "metric_value": 0.9, "baseline_value": 0.82}}


CLIENT = r"""
import json, sys, time
kind, target, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = json.loads(sys.stdin.read())
body = spec["body"].encode()
if kind == "webhook":  # requests.Session, as the shipped WebhookSink sends
    import requests
    s = requests.Session()
    send = lambda: s.post(target, data=body, headers=spec["headers"], timeout=10).status_code
elif kind == "webhook-raw":  # http.client on one keep-alive connection: a much cheaper client
    import http.client, urllib.parse
    u = urllib.parse.urlsplit(target)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    def send():
        c.request("POST", u.path, body=body, headers=spec["headers"])
        r = c.getresponse()
        r.read()
        return r.status
else:
    import redis
    r = redis.Redis.from_url(target)
    fields = {"event_id": spec["event_id"], "event_type": "token_ready_for_deploy", "data": spec["body"]}
    send = lambda: r.xadd(spec["stream"], fields) and 200
for _ in range(20):
    send()
t0 = time.perf_counter()
bad = sum(1 for _ in range(n) if send() != 200)
t1 = time.perf_counter()
print(json.dumps({"t0": t0, "t1": t1, "n": n, "bad": bad}))
"""


def sink_capacity(kind: str, target: str, n: int, clients: int, stream: str | None = None) -> float:
    """Requests per second that ``clients`` sequential client processes get from the sink together."""
    event_id, body, headers = sample_event()
    spec = json.dumps({"event_id": event_id, "body": body, "headers": headers, "stream": stream})
    procs = [subprocess.Popen([sys.executable, "-c", CLIENT, kind, target, str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(clients)]
    outs = [json.loads(p.communicate(spec)[0]) for p in procs]
    if any(o["bad"] for o in outs):
        raise SystemExit(f"sink capacity ({kind}): non-2xx answers {outs}")
    return sum(o["n"] for o in outs) / (max(o["t1"] for o in outs) - min(o["t0"] for o in outs))


# -- part 1: the fast path -----------------------------------------------------------------------


def quiet_app_logs() -> None:
    """The receiver logs one INFO line per delivery (to stderr when there is no root handler)."""
    import logging

    for name in ("webhook_app", "hokusai_mlflow_plugin"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fast_path(kind: str, args, sink: FastSink) -> dict:
    from hokusai_mlflow_plugin.config import load_settings
    from webhook_app import create_app

    with Backend(kind) as b:
        total = args.warmup + args.n
        t0 = time.perf_counter()
        prepared = prepare(b.client, b.sessions, total, "bench-events", tag="BE")
        name = f"bench-events-{uuid.uuid4().hex[:8]}"
        ensure_registered_model(b.client, name)
        versions = [create_version(b.client, name, p) for p in prepared]
        print(f"[fast path, {kind}] prepared {total} tokens and versions in {time.perf_counter() - t0:.1f}s", flush=True)

        settings = load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": sink.url, "HOKUSAI_EVENT_WEBHOOK_SECRET": SINK_SECRET})
        app = create_app({
            "HOKUSAI_WEBHOOK_SECRETS": (RECEIVER_SECRET,),
            "HOKUSAI_DATABASE_URL": b.db_url,
            "MLFLOW_TRACKING_URI": b.mlflow.url,
            "HOKUSAI_SETTINGS": settings,
        })
        quiet_app_logs()
        service = app.extensions["hokusai"]
        relay = app.extensions["hokusai_relay"]
        http = app.test_client()

        commits: dict[str, float] = {}  # event id -> its commit

        def _committed(event_ids):
            now = time.perf_counter()
            for event_id in event_ids:
                commits[event_id] = now

        service.after_commit.insert(0, _committed)
        sends: dict[str, float] = {}
        (webhook_sink,) = relay.sinks.values()
        original_send = webhook_sink.send

        def timed_send(event_id, event_type, body):
            result = original_send(event_id, event_type, body)
            sends[event_id] = time.perf_counter()
            return result

        webhook_sink.send = timed_send

        # The relay's steps on this instance, timed: which of them the commit -> 2xx time is spent in.
        steps: list[tuple[str, float, float]] = []
        def timed_step(step_name, inner):
            def wrapper(*a, **kw):
                t = time.perf_counter()
                try:
                    return inner(*a, **kw)
                finally:
                    steps.append((step_name, t, time.perf_counter()))
            return wrapper

        for step in ("fan_out", "claim", "renew", "record", "record_delivered"):  # the deliveries store's
            setattr(relay.deliveries, step, timed_step(step, getattr(relay.deliveries, step)))
        mlflow_calls: list[tuple[float, float]] = []  # tag_outcome, which runs in the request thread
        from hokusai_mlflow_plugin.mlflow_io import facts as mlflow_facts

        original_tag = mlflow_facts.tag_outcome

        def timed_tag(*a, **kw):
            t = time.perf_counter()
            try:
                return original_tag(*a, **kw)
            finally:
                mlflow_calls.append((t, time.perf_counter()))

        mlflow_facts.tag_outcome = timed_tag

        rows = []
        try:
            for i, (p, version) in enumerate(zip(prepared, versions)):
                body = benchlib.created_body(name, version, f"models:/{p.model_id}")
                response = http.post("/webhooks/mlflow", data=body, headers=benchlib.mlflow_headers(body, RECEIVER_SECRET))
                if response.status_code != 200 or response.json["status"] != "registered":
                    raise SystemExit(f"{name} v{version}: {response.status_code} {response.get_data(as_text=True)}")
                token = p.token_id

                def ours(event_type, token=token):
                    def match(raw: bytes) -> bool:
                        e = json.loads(raw)
                        return e["event_type"] == event_type and e["payload"]["token_id"] == token
                    return match

                ready = sink.wait(ours("token_ready_for_deploy"), timeout=args.timeout)
                first = sink.wait(ours("model_registered"), timeout=1)
                if ready is None or first is None:
                    raise SystemExit(f"[fast path, {kind}] the events of {token} did not arrive within {args.timeout:g}s")
                commit = commits[ready[1]]
                settle = time.monotonic() + 5
                while ready[1] not in sends and time.monotonic() < settle:  # the relay reads the 200 after the sink wrote it
                    time.sleep(0.001)
                def within(start, end):
                    return sum(min(b, end) - max(a, start) for _, a, b in steps if b > start and a < end) * 1000

                def step_in(name_, start, end):
                    return sum(min(b, end) - max(a, start) for n_, a, b in steps if n_ == name_ and b > start and a < end) * 1000

                tag_start, tag_end = mlflow_calls[-1]
                if i >= args.warmup:
                    rows.append({
                        "db_steps": within(commit, ready[0]),
                        "renew_record": sum(step_in(n_, commit, ready[0]) for n_ in ("renew", "record", "record_delivered")),
                        "fan_claim": step_in("fan_out", commit, ready[0]) + step_in("claim", commit, ready[0]),
                        "tag_overlap": max(0.0, min(tag_end, ready[0]) - max(tag_start, commit)) * 1000,
                        "commit_to_2xx": (ready[0] - commit) * 1000,
                        "commit_to_first_2xx": (first[0] - commits[first[1]]) * 1000,
                        "commit_to_send_return": (sends[ready[1]] - commit) * 1000,
                    })
                time.sleep(args.gap)
        finally:
            mlflow_facts.tag_outcome = original_tag
            relay.stop()
            sink.reset()

        print()
        print(f"[fast path, {kind}] commit -> downstream 2xx, {len(rows)} registrations {args.gap:g} s apart; "
              f"load average now {benchlib.loadavg()}")
        print(table([
            ("commit -> token_ready_for_deploy 2xx", summary(x["commit_to_2xx"] for x in rows)),
            ("commit -> model_registered 2xx", summary(x["commit_to_first_2xx"] for x in rows)),
            ("commit -> relay's send() returned", summary(x["commit_to_send_return"] for x in rows)),
            ("  of commit -> 2xx, in relay DB steps", summary(x["db_steps"] for x in rows)),
            ("    of which fan_out + claim", summary(x["fan_claim"] for x in rows)),
            ("    of which renew + record", summary(x["renew_record"] for x in rows)),
            ("  of commit -> 2xx, overlapping tag_outcome", summary(x["tag_overlap"] for x in rows)),
        ]))
        shipped = summary(x["commit_to_2xx"] for x in rows)
        return {"kind": kind, "gap": args.gap, "median": shipped["median"], "p99": shipped["p99"]}


# -- part 2: throughput --------------------------------------------------------------------------


def fill_outbox(url: str, n: int) -> tuple[float, float]:
    """``n`` token_ready_for_deploy rows in one transaction, a NOTIFY per event, as registrations
    write them. Returns (perf_counter, wall clock) right after the commit."""
    from hokusai_mlflow_plugin.db.models import OutboxEvent, utcnow
    from hokusai_mlflow_plugin.db.session import session_factory
    from tests.harness import notify

    ids = [str(uuid.uuid4()) for _ in range(n)]
    with session_factory(url).begin() as session:
        session.add_all(
            OutboxEvent(event_id=event_id, event_type="token_ready_for_deploy", payload=payload(i), created_at=utcnow())
            for i, event_id in enumerate(ids)
        )
        notify(session, ids)
    return time.perf_counter(), time.time()


SHIPPED_WORKER = [sys.executable, "-m", "hokusai_mlflow_plugin", "events", "relay"]
BASELINE_WORKER = [sys.executable, str(benchlib.REPO / "bench" / "baseline_relay.py")]


def start_workers(url: str, sink_env: dict, count: int, logdir, command: list[str]) -> list[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
    env.update({"HOKUSAI_DATABASE_URL": url, "HOKUSAI_HOME": str(logdir / "home"), "HOKUSAI_LOG_LEVEL": "WARNING", **sink_env})
    workers = []
    for i in range(count):
        with open(logdir / f"worker-{i}.log", "wb") as log:
            workers.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + 120
    for i, w in enumerate(workers):
        while "Relaying to" not in (logdir / f"worker-{i}.log").read_text(errors="replace"):
            if w.poll() is not None or time.monotonic() > deadline:
                stop_workers(workers)
                raise SystemExit(f"relay worker {i} did not start: {(logdir / f'worker-{i}.log').read_text()[-2000:]}")
            time.sleep(0.05)
    time.sleep(1.5)  # their LISTEN connections are up, their first poll passes are done
    return workers


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for w in workers:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGTERM)
    for w in workers:
        try:
            w.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(w.pid, signal.SIGKILL)
            w.wait()


def delivery_states(url: str) -> dict[str, int]:
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.models import Delivery
    from hokusai_mlflow_plugin.db.session import session_factory

    with session_factory(url)() as s:
        return dict(s.execute(sa.select(Delivery.status, sa.func.count()).group_by(Delivery.status)).all())


def throughput(sink_kind: str, workers_n: int, args, sink: FastSink, workdir, variant: str = "shipped") -> dict:
    import redis

    from hokusai_mlflow_plugin.db.migrate import upgrade
    from hokusai_mlflow_plugin.db.session import dispose
    from tests.harness import create_pg_database, drop_pg_database

    url = create_pg_database("hokusai_bench_events")
    stream = f"hokusai:bench:{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(REDIS_URL)
    logdir = workdir / f"{variant}-{sink_kind}-{workers_n}"
    logdir.mkdir(parents=True)
    workers = []
    try:
        upgrade(url)
        sink.reset()
        if sink_kind == "webhook":
            sink_env = {"HOKUSAI_EVENT_WEBHOOK_URL": sink.url, "HOKUSAI_EVENT_WEBHOOK_SECRET": SINK_SECRET}
        else:
            sink_env = {"HOKUSAI_REDIS_URL": REDIS_URL, "HOKUSAI_REDIS_STREAM": stream}
        workers = start_workers(url, sink_env, workers_n, logdir, BASELINE_WORKER if variant == "baseline" else SHIPPED_WORKER)
        t0, wall0 = fill_outbox(url, args.events)
        deadline = time.monotonic() + args.timeout_throughput
        if sink_kind == "webhook":
            if not sink.wait_count(args.events, timeout=args.timeout_throughput):
                raise SystemExit(f"throughput {sink_kind} x{workers_n}: only {sink.count()} of {args.events} arrived")
            with sink.cond:
                times = sorted(a[0] - t0 for a in sink.arrivals)
                ids = [a[1] for a in sink.arrivals]
        else:
            while r.xlen(stream) < args.events:
                if time.monotonic() > deadline:
                    raise SystemExit(f"throughput {sink_kind} x{workers_n}: only {r.xlen(stream)} of {args.events} arrived")
                time.sleep(0.01)
            entries = r.xrange(stream)
            times = sorted(int(eid.split(b"-")[0]) / 1000.0 - wall0 for eid, _ in entries)
            ids = [fields[b"event_id"].decode() for _, fields in entries]
        while (states := delivery_states(url)).get("delivered", 0) < args.events:  # the last record() commits
            if time.monotonic() > deadline:
                raise SystemExit(f"throughput {sink_kind} x{workers_n}: deliveries {states}")
            time.sleep(0.05)
        time.sleep(0.5)
        extra = (sink.count() if sink_kind == "webhook" else r.xlen(stream)) - args.events
    finally:
        stop_workers(workers)
        r.delete(stream)
        r.close()
        dispose(url)
        drop_pg_database(url)
    n = len(times)
    lo, hi = int(n * 0.1), int(n * 0.9) - 1
    return {
        "variant": variant, "sink": sink_kind, "workers": workers_n, "n": n, "first_s": times[0], "last_s": times[-1],
        "rate": args.events / times[-1], "steady": (hi - lo) / (times[hi] - times[lo]),
        "duplicates": len(ids) - len(set(ids)) + max(0, extra), "states": states,
    }


def breakdown(args, sink: FastSink, variant: str = "shipped") -> None:
    """Per-delivery time of each relay step, one Relay driven by run_once in this process."""
    from baseline_relay import PerDeliveryRelay, reading_the_environment_per_post

    from hokusai_mlflow_plugin.db.migrate import upgrade
    from hokusai_mlflow_plugin.db.session import dispose, session_factory
    from hokusai_mlflow_plugin.events.relay import Relay
    from hokusai_mlflow_plugin.events.sinks import WebhookSink
    from tests.harness import create_pg_database, drop_pg_database

    base = PerDeliveryRelay if variant == "baseline" else Relay
    steps = ["fan_out", "claim", "renew", "send", "record", "record_delivered"]
    spent: dict[str, list[float]] = {k: [] for k in steps}

    def timed(step, inner):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                spent[step].append(time.perf_counter() - t)
        return wrapper

    url = create_pg_database("hokusai_bench_events")
    try:
        upgrade(url)
        sink.reset()
        webhook = WebhookSink(sink.url, SINK_SECRET)
        if variant == "baseline":
            reading_the_environment_per_post([webhook])
        sessions = session_factory(url)
        webhook.send = timed("send", webhook.send)
        relay = base(sessions, [webhook])
        for step in spent:  # the deliveries store's steps; "send" is the sink's
            if step != "send":
                setattr(relay.deliveries, step, timed(step, getattr(relay.deliveries, step)))
        fill_outbox(url, args.breakdown)
        t0 = time.perf_counter()
        done = relay.run_once()
        elapsed = time.perf_counter() - t0
        webhook.close()
    finally:
        dispose(url)
        drop_pg_database(url)
    print()
    print(f"[relay breakdown, {variant}] one {base.__name__}, run_once in this process (the sink too), {done} deliveries "
          f"to the webhook sink in {elapsed:.2f}s = {done / elapsed:.0f}/s; time per delivery by step (ms):")
    total = sum(sum(v) for v in spent.values())
    for step, values in spent.items():
        print(f"  {step:<12} {sum(values) / done * 1000:7.3f} ms  ({len(values)} calls, {sum(values) / total * 100:4.1f}%)")
    print(f"  {'all':<12} {total / done * 1000:7.3f} ms; outside the steps {(elapsed - total) / done * 1000:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="fast-path registrations per kind (200; 0: skip)")
    parser.add_argument("--warmup", type=int, default=10, help="fast-path registrations first, not counted (10)")
    parser.add_argument("--kinds", default="postgresql,sqlite", help="fast-path database kinds (postgresql,sqlite)")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between fast-path registrations (0.1; 0: back to back)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for one event (15)")
    parser.add_argument("--events", type=int, default=2000, help="outbox events per throughput run (2000; 0: skip)")
    parser.add_argument("--workers", default="1,2", help="relay worker counts (1,2)")
    parser.add_argument("--sinks", default="webhook,redis", help="throughput sinks (webhook,redis)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="throughput and breakdown: the shipped relay only (default: also bench/baseline_relay.py)")
    parser.add_argument("--capacity", type=int, default=3000, help="requests per client for the sink capacity (3000; 0: skip)")
    parser.add_argument("--breakdown", type=int, default=1000, help="events for the per-step relay breakdown (1000; 0: skip)")
    parser.add_argument("--timeout-throughput", type=float, default=600.0, help="seconds per throughput run (600)")
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    print(machine_facts(), flush=True)
    sink = FastSink()
    workdir = Path(tempfile.mkdtemp(prefix="hokusai-bench-events-"))
    results = []
    try:
        if args.n:
            for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
                results.append(fast_path(kind, args, sink))
        runs = []
        if args.events:
            if args.capacity:
                print()
                print(f"[sinks] capacity, {args.capacity} sequential requests per client process:")
                for client, label in (("webhook", "requests.Session"), ("webhook-raw", "http.client")):
                    for clients in (1, 2):
                        print(f"  webhook sink (this process), {clients} {label} client(s): "
                              f"{sink_capacity(client, sink.url, args.capacity, clients):.0f} requests/s", flush=True)
                        sink.reset()
                stream = f"hokusai:bench:capacity:{uuid.uuid4().hex[:8]}"
                for clients in (1, 2):
                    print(f"  Redis XADD, {clients} client(s): "
                          f"{sink_capacity('redis', REDIS_URL, args.capacity, clients, stream):.0f} requests/s", flush=True)
                import redis

                redis.Redis.from_url(REDIS_URL).delete(stream)
            variants = ["shipped", "baseline"] if args.baseline else ["shipped"]
            if args.breakdown:
                for variant in variants:
                    breakdown(args, sink, variant)
            print()
            sinks = [x.strip() for x in args.sinks.split(",") if x.strip()]
            counts = [int(w) for w in args.workers.split(",") if w.strip()]
            for sink_kind, workers_n, variant in [(k, w, v) for k in sinks for w in counts for v in variants]:
                run = throughput(sink_kind, workers_n, args, sink, workdir, variant)
                runs.append(run)
                print(f"[throughput, {variant}] {sink_kind:<7} {workers_n} worker(s): {run['rate']:6.0f} events/s "
                      f"({run['n']} events, first after {run['first_s'] * 1000:.0f} ms, last after {run['last_s']:.2f} s; "
                      f"steady p10..p90 {run['steady']:.0f}/s; duplicates {run['duplicates']}; {run['states']}; "
                      f"load average {benchlib.loadavg()})", flush=True)
    finally:
        sink.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)

    print()
    for r in results:
        verdict = "met" if r["p99"] < TARGET_LATENCY_P99_MS else "MISSED"
        print(f"target commit -> 2xx p99 < {TARGET_LATENCY_P99_MS:g} ms, {r['kind']}, {r['gap']:g} s apart: {verdict} "
              f"(median {r['median']:.1f} ms, p99 {r['p99']:.1f} ms)")
    for run in runs:
        if run["sink"] == "webhook" and run["variant"] == "shipped":
            verdict = "met" if run["rate"] >= TARGET_RATE else "MISSED"
            base = next((b for b in runs if b["variant"] == "baseline" and b["sink"] == "webhook"
                         and b["workers"] == run["workers"]), None)
            ratio = f"; {run['rate'] / base['rate']:.2f}x the baseline's {base['rate']:.0f}/s in this run" if base else ""
            print(f"target >= {TARGET_RATE:g} events/s to the webhook sink, {run['workers']} worker(s): {verdict} "
                  f"({run['rate']:.0f}/s{ratio})")
    print(benchlib.finished())


if __name__ == "__main__":
    main()
