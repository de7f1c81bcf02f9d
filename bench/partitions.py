"""Partitions for the chaos run (issue 25): silent cuts of chosen links, a prober that revokes keys
and asks the gateway with them, and a log of every delivery lease, kept by a trigger in the run's
own PostgreSQL.

The links (``tests/netns.py``: a namespace and a veth pair each, made and removed by the run; a
relay process listens inside them and passes bytes on to the server in the root namespace). Each
process that reaches a server through a link is given the link's address instead of the server's:

* ``gwpg``: the gateway to PostgreSQL (its key check and the watch that renews its lease);
* ``rcpg``: the receiver to PostgreSQL (its decisions, and the deliveries it sends after a commit);
* ``r1pg``: relay-1 to PostgreSQL, cut while relay-1 holds a lease, for longer than the lease;
* ``rcml``: the receiver to MLflow.

Everything else (relay-2, the reconcile sweep, the workload, the revoker) reaches the servers
directly. A cut is ``ip -n <ns> link set <veth> down``: no FIN, no RST.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import benchlib

from tests import netns

LINKS = {
    "gwpg": "gateway -> PostgreSQL",
    "rcpg": "receiver -> PostgreSQL",
    "r1pg": "relay-1 -> PostgreSQL (cut mid-lease)",
    "rcml": "receiver -> MLflow",
}
RELAY_LINK = "r1pg"


class Network:
    """The run's links and their relay process. ``close()`` removes both, whatever happened."""

    def __init__(self, workdir: Path, pg_port: int, mlflow_port: int):
        self.workdir, self.pg_port, self.mlflow_port = workdir, pg_port, mlflow_port
        self.links: dict[str, netns.Link] = {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Network:
        why = netns.why_not()
        if why is not None:
            raise RuntimeError(f"--partitions {why}")
        netns.sweep()
        specs = []
        for tag in LINKS:
            link = self.links[tag] = netns.Link(tag)
            link.make()
            port = self.mlflow_port if tag == "rcml" else self.pg_port
            specs.append(f"{link.namespace}:{link.inside}:{port}=127.0.0.1:{port}")
        log = open(self.workdir / "netns-relays.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.netns", *specs], cwd=benchlib.REPO, stdout=subprocess.PIPE,
                                     stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        line = self.proc.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"the relays of the links did not start ({line!r}); see {self.workdir / 'netns-relays.log'}")
        return self

    def address(self, tag: str) -> str:
        """host:port to reach the server of link ``tag`` through it."""
        port = self.mlflow_port if tag == "rcml" else self.pg_port
        return f"{self.links[tag].inside}:{port}"

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            for link in self.links.values():
                link.remove()


class Partitioner(threading.Thread):
    """Shuffled rounds of every link: each cut for ``1 .. max_cut`` seconds, or flapping (down and
    up a few times, for under a second each); relay-1's link is cut once relay-1 holds a lease, for
    longer than the lease, so that it runs out during the cut."""

    def __init__(self, network: Network, rng: random.Random, interval: float, max_cut: float, relay_lease: float, pg, stop: threading.Event):
        super().__init__(name="partitioner", daemon=True)
        self.network, self.rng, self.interval, self.max_cut, self.relay_lease = network, rng, interval, max_cut, relay_lease
        self.pg, self.stop_event = pg, stop  # pg(): a psycopg connection to the run's database
        self.cuts, self.flaps, self.down_s = Counter(), Counter(), Counter()
        self.mid_lease, self.log = 0, []
        self.error: BaseException | None = None
        self.gateway_cut = threading.Event()  # set while the gateway's link is down (the prober revokes then)

    def rounds(self):
        while True:
            tags = list(LINKS)
            self.rng.shuffle(tags)
            yield from tags

    def run(self) -> None:
        try:
            tags = self.rounds()
            while not self.stop_event.wait(self.interval * self.rng.uniform(0.5, 1.5)):
                tag = next(tags)
                if tag == RELAY_LINK:
                    self.cut_mid_lease()
                elif self.rng.random() < 0.35:
                    self.flap(tag)
                else:
                    self.cut(tag, self.rng.uniform(1.0, self.max_cut))
        except BaseException as e:  # pragma: no cover - reported by the run
            self.error = e
        finally:
            self.heal_all()

    def _down(self, tag: str, seconds: float) -> None:
        link = self.network.links[tag]
        link.cut()
        t0 = time.monotonic()
        if tag == "gwpg":
            self.gateway_cut.set()
        self.stop_event.wait(seconds)
        self.gateway_cut.clear()
        link.heal()
        self.down_s[tag] += time.monotonic() - t0

    def cut(self, tag: str, seconds: float, note: str = "") -> None:
        self.cuts[tag] += 1
        self.log.append(f"{time.strftime('%H:%M:%S')} cut {LINKS[tag]} for {seconds:.1f}s{note}")
        self._down(tag, seconds)

    def flap(self, tag: str) -> None:
        times = self.rng.randint(3, 6)
        self.flaps[tag] += 1
        self.log.append(f"{time.strftime('%H:%M:%S')} flap {LINKS[tag]} x{times}")
        for _ in range(times):
            self._down(tag, self.rng.uniform(0.2, 1.0))
            if self.stop_event.wait(self.rng.uniform(0.2, 1.0)):
                return

    def cut_mid_lease(self) -> None:
        """Once relay-1 holds a lease (looked for for up to 15 s), cut its link for the lease and 1-3 s more."""
        deadline, held = time.monotonic() + 15.0, False
        while not held and time.monotonic() < deadline and not self.stop_event.is_set():
            try:
                with self.pg() as conn:
                    held = conn.execute("SELECT EXISTS (SELECT 1 FROM hokusai_deliveries d JOIN chaos_leases l ON l.owner = d.lease_owner "
                                        "WHERE l.app = 'relay-1' AND d.locked_until > now())").fetchone()[0]
            except Exception:
                pass  # PostgreSQL killed a moment ago
            if not held:
                time.sleep(0.02)
        self.mid_lease += held
        self.cut(RELAY_LINK, self.relay_lease + self.rng.uniform(1.0, 3.0), "" if held else " (relay-1 held no lease within 15 s)")

    def heal_all(self) -> None:
        for link in self.network.links.values():
            if link.is_cut:
                link.heal()

    def summary(self) -> dict:
        return {LINKS[t]: {"cuts": self.cuts[t], "flapping": self.flaps[t], "seconds_down": round(self.down_s[t], 1)} for t in LINKS} | {
            "relay-1 cuts that began while it held a lease": self.mid_lease}


# -- who sent a delivery, and the lease log: who held each delivery, from when until when -----------


class Senders:
    """Which child sent a request to the consumer, by its connection: the socket's inode in
    ``/proc/net/tcp``, and the process of the child's group that holds it (Linux)."""

    def __init__(self, groups: Callable[[], dict[str, int]]):
        self.groups = groups  # name -> process group id, of the children that send deliveries
        self.pids: dict[str, list[int]] = {}

    def of(self, peer_port: int, our_port: int) -> str:
        inode = _inode(peer_port, our_port)
        if inode is not None:
            for attempt in (1, 2):
                for name, pids in self.pids.items():
                    if any(_holds(pid, inode) for pid in pids):
                        return name
                if attempt == 1:  # a child restarted, or a worker forked since: look again
                    from hokusai_mlflow_plugin.stack.process import processes_where

                    self.pids = {name: processes_where(pgrp=pgid) for name, pgid in self.groups().items()}
        return "unknown"


def _inode(peer_port: int, our_port: int) -> str | None:
    local, remote = f"0100007F:{peer_port:04X}", f"0100007F:{our_port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table:
            fields = line.split()
            if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                return fields[9]
    return None


def _holds(pid: int, inode: str) -> bool:
    target = f"socket:[{inode}]"
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


LEASE_LOG = """
CREATE TABLE IF NOT EXISTS chaos_leases (id bigserial PRIMARY KEY, delivery_id integer, event_id text, owner text, app text,
                                         locked_until timestamptz, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION chaos_lease_log() RETURNS trigger AS $$
BEGIN
    IF OLD.lease_owner IS DISTINCT FROM NEW.lease_owner OR OLD.locked_until IS DISTINCT FROM NEW.locked_until THEN
        INSERT INTO chaos_leases (delivery_id, event_id, owner, app, locked_until)
        VALUES (NEW.id, NEW.event_id, NEW.lease_owner, current_setting('application_name'), NEW.locked_until);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS chaos_lease_log ON hokusai_deliveries;
CREATE TRIGGER chaos_lease_log AFTER UPDATE ON hokusai_deliveries FOR EACH ROW EXECUTE FUNCTION chaos_lease_log();
"""


def install_lease_log(conn) -> None:
    conn.execute(LEASE_LOG)


def check_leases(sends: list[tuple[str, str, datetime]], leases: list[tuple], relay_names: set[str]) -> dict:
    """Every send of a delivery (sender, event id, when the consumer got it) must fall inside a
    lease its sender held on it; two owners' leases of one delivery must not overlap (the second
    claims after the first's ran out or was given back)."""
    by_event: dict[str, list[tuple]] = defaultdict(list)  # one sink: an event has one delivery
    for delivery_id, event_id, owner, app, locked_until, at in leases:
        by_event[event_id].append((at, owner, app, locked_until))
    outside, overlapping = [], []
    for sender, event_id, when in sends:
        held = [(at, until) for at, owner, app, until in by_event.get(event_id, []) if owner and app == sender]
        if not any(at <= when <= until for at, until in held):
            outside.append(f"{event_id} sent by {sender} at {when:%H:%M:%S.%f}: its leases {[(f'{a:%H:%M:%S.%f}', f'{u:%H:%M:%S.%f}') for a, u in held]}")
    for event_id, rows in by_event.items():
        rows.sort(key=lambda r: r[0])
        holder = None  # (owner, until) of the lease in force
        for at, owner, app, until in rows:
            if owner is None:
                holder = None  # given back, or recorded
                continue
            if holder is not None and holder[0] != owner and at < holder[1]:
                overlapping.append(f"{event_id}: {app} claimed at {at:%H:%M:%S.%f} before {holder[0][:8]}'s lease ran out at {holder[1]:%H:%M:%S.%f}")
            holder = (owner, until)
    senders = defaultdict(set)
    for sender, event_id, _ in sends:
        senders[event_id].add(sender)
    return {"sends": len(sends), "sends_outside_a_lease": len(outside), "outside": outside[:20],
            "overlapping_leases": len(overlapping), "overlapping": overlapping[:20],
            "sent_by_two_senders": sum(1 for s in senders.values() if len(s) > 1),
            "sent_by_two_relay_workers": sum(1 for s in senders.values() if len(s & relay_names) > 1)}


# -- revoked keys, asked through the gateway -------------------------------------------------------

LET_IN_NOT = {401, 429, 503}  # refused by the key check (or its address's limit), or the database unreachable


class KeyProber(threading.Thread):
    """Round after round: an admin key is made and used through the gateway until it is let in
    (remembered), asked by three threads every 50 ms, revoked from the database's side
    (``revoke_everywhere``) and asked for 3 s more. Any request begun after the revoke returned and
    answered otherwise than 401, 429 or 503 is a revoked key let in. A cut of the gateway's link
    brings the revoke forward, into the gateway's lease."""

    def __init__(self, gateway_url: str, db_url: str, rng: random.Random, stop: threading.Event, gateway_cut: threading.Event):
        super().__init__(name="key-prober", daemon=True)
        self.gateway_cut = gateway_cut
        self.url = gateway_url + "/api/2.0/mlflow/experiments/get?experiment_id=0"
        self.db_url, self.rng, self.stop_event = db_url, rng, stop
        self.revoked = self.revoke_failed = self.never_let_in = 0
        self.after = Counter()  # status of requests begun after a revoke returned
        self.before = Counter()  # status of requests with a key not yet revoked
        self.let_in_after: list[str] = []
        self.revoke_s: list[float] = []
        self.waited_for_lease = self.during_cut = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self.round()
        except BaseException as e:  # pragma: no cover - reported by the run
            self.error = e

    def _make_key(self) -> str | None:
        from hokusai_mlflow_plugin.auth import keys
        from hokusai_mlflow_plugin.db.session import session_factory

        try:
            with session_factory(self.db_url).begin() as session:
                return keys.create(session, "chaos-prober", (keys.ADMIN,)).key
        except Exception:
            return None  # PostgreSQL killed a moment ago

    def round(self) -> None:
        import requests

        from hokusai_mlflow_plugin.auth.revocation import revoke_everywhere
        from hokusai_mlflow_plugin.db.session import session_factory

        key = self._make_key()
        if key is None:
            self.stop_event.wait(0.5)
            return
        headers = {"Authorization": f"Bearer {key}"}
        answers: list[tuple[float, int]] = []  # (began, status)
        lock, done = threading.Lock(), threading.Event()

        def ask():
            with requests.Session() as session:
                while not done.is_set():
                    began = time.monotonic()
                    try:
                        status = session.get(self.url, headers=headers, timeout=15).status_code
                    except requests.RequestException:
                        status = 0  # the gateway killed or restarting: nothing let in
                    with lock:
                        answers.append((began, status))
                    time.sleep(0.05)

        askers = [threading.Thread(target=ask, daemon=True) for _ in range(3)]
        for t in askers:
            t.start()
        returned = None
        try:
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and not self.stop_event.is_set():  # used, so remembered
                with lock:
                    if any(s not in LET_IN_NOT and s != 0 for _, s in answers):
                        break
                time.sleep(0.05)
            else:
                self.never_let_in += 1
            # Revoke a moment later, or as soon as the gateway's link is cut: within its lease, while
            # it may still trust its memory of the key (the window a revoke must wait out).
            if self.gateway_cut.wait(self.rng.uniform(0.5, 8.0)):
                time.sleep(self.rng.uniform(0.0, 1.5))
            began = time.monotonic()
            self.during_cut += self.gateway_cut.is_set()
            try:
                result = revoke_everywhere(session_factory(self.db_url), key[3:11])
                returned = time.monotonic()
                self.revoked += 1
                self.revoke_s.append(returned - began)
                self.waited_for_lease += result.waited_for_lease > 0
            except Exception:
                self.revoke_failed += 1  # PostgreSQL killed during it: it never returned
            time.sleep(3.0)
        finally:
            done.set()
            for t in askers:
                t.join(20)
        for began, status in answers:
            if returned is not None and began >= returned:
                self.after[status] += 1
                if status not in LET_IN_NOT and status != 0:
                    self.let_in_after.append(f"{key[3:11]}: {status}, asked {began - returned:.2f}s after the revoke returned")
            elif returned is None or began < returned:
                self.before[status] += 1

    def summary(self) -> dict:
        s = sorted(self.revoke_s)
        return {"keys_revoked": self.revoked, "revokes_that_failed": self.revoke_failed,
                "revokes_that_waited_for_a_lease": self.waited_for_lease,
                "revokes_begun_while_the_gateway_was_cut_off": self.during_cut,
                "revoke_seconds": {"median": round(s[len(s) // 2], 2), "max": round(s[-1], 2)} if s else {},
                "keys_never_let_in_before_their_revoke": self.never_let_in,
                "before_revoke": {str(k): v for k, v in sorted(self.before.items())},
                "after_revoke": {str(k): v for k, v in sorted(self.after.items())},
                "let_in_after_revoke": len(self.let_in_after), "let_in": self.let_in_after[:20]}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
