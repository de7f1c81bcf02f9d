"""A revoked key stays revoked when the gateway's link to the database fails silently (issue 25).

The gateway's key check reaches PostgreSQL through a TCP relay whose listening end lives in a
network namespace of the test's own, joined to the root namespace by a veth pair
(10.231.47.0/30). ``ip link set <veth> down`` then cuts the link the way a failed switch does: no
FIN, no RST, only silence. The key is revoked from the database's side while the link is down.

Needs root (``ip netns``): skipped elsewhere with the reason, and failed, never skipped, under
``CI=true``. It removes its namespace and link even when it fails, and those of an earlier run
that did not.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.auth.key_check import KeyCheck
from hokusai_mlflow_plugin.auth.revocation import LEASE_MARGIN, RATE_MARGIN, revoke_everywhere
from hokusai_mlflow_plugin.core.errors import DatabaseUnavailable
from hokusai_mlflow_plugin.db.session import session_factory
from tests.auth.test_key_check import Loop, make, remembered, until

NAMESPACE, VETH, VETH_INSIDE = "hk-partition", "hkpart0", "hkpart1"
OUTSIDE, INSIDE = "10.231.47.1", "10.231.47.2"
LEASE = 1.0
CONFIRMING = 1.0  # seconds a revoke may take beyond the lease and its margins (its commit, its queries)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


def remove_network() -> None:
    ip("netns", "del", NAMESPACE, check=False)  # takes its end of the pair, and so the pair, with it
    ip("link", "del", VETH, check=False)


def make_network() -> None:
    ip("netns", "add", NAMESPACE)
    ip("link", "add", VETH, "type", "veth", "peer", "name", VETH_INSIDE, "netns", NAMESPACE)
    ip("addr", "add", f"{OUTSIDE}/30", "dev", VETH)
    ip("link", "set", VETH, "up")
    ip("-n", NAMESPACE, "addr", "add", f"{INSIDE}/30", "dev", VETH_INSIDE)
    ip("-n", NAMESPACE, "link", "set", VETH_INSIDE, "up")
    ip("-n", NAMESPACE, "link", "set", "lo", "up")


@pytest.fixture
def network():
    why = None
    if os.geteuid() != 0:
        why = "needs root for ip netns (CI runs as root)"
    elif shutil.which("ip") is None:
        why = "needs the ip command (iproute2)"
    if why is None:
        remove_network()  # what a run that was killed left behind
        try:
            make_network()
        except subprocess.CalledProcessError as e:
            remove_network()
            why = f"cannot make a network namespace here: {e.stderr.strip() or e}"
    if why is not None:
        pytest.skip(why)
    try:
        yield
    finally:
        remove_network()


_CLONE_NEWNET = 0x40000000


def listening_inside(namespace: str) -> socket.socket:
    """A listening socket on INSIDE, made in ``namespace`` by a thread of its own (a network
    namespace is a thread's: the rest of the process stays in the root namespace)."""
    libc = ctypes.CDLL(None, use_errno=True)
    made: dict = {}

    def enter_and_listen():
        target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                made["error"] = OSError(ctypes.get_errno(), "setns")
                return
            made["socket"] = socket.create_server((INSIDE, 0))
        finally:
            os.close(target)  # the thread ends here, inside the namespace: nothing else runs in it

    thread = threading.Thread(target=enter_and_listen)
    thread.start()
    thread.join(10)
    if "error" in made:
        raise made["error"]
    return made["socket"]


class Relay:
    """Bytes from INSIDE:port (the namespace) to PostgreSQL (the root namespace) and back."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.server = listening_inside(NAMESPACE)
        self.port = self.server.getsockname()[1]
        self.sockets = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                return
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def close(self):
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


class Requests:
    """Clients that ask the gateway's key check with one key every 50 ms, in a thread, each request
    on its own; when each began, when it was answered and how."""

    def __init__(self, check: KeyCheck, loop: Loop, key: str):
        self.check, self.loop, self.key = check, loop, key
        self.answers: list[tuple[float, float, str]] = []  # (began, answered, "in" | "refused" | "unavailable")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: self.loop.loop.run_until_complete(self._ask()), daemon=True)

    async def _ask(self):
        asked = []
        while not self.stop.is_set():  # one request every 50 ms, whether the one before was answered or not
            asked.append(asyncio.ensure_future(self._one()))
            await asyncio.sleep(0.05)
        await asyncio.gather(*asked)

    async def _one(self):
        began = time.monotonic()
        try:
            await self.check.caller(self.key)
            outcome = "in"
        except keys.NotAuthenticated:
            outcome = "refused"
        except DatabaseUnavailable:
            outcome = "unavailable"
        self.answers.append((began, time.monotonic(), outcome))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the requests did not end"


def test_a_revoked_key_is_not_let_in_after_revoke_returns_while_the_gateway_is_cut_off(network, pg_url):
    parsed = sa.make_url(pg_url)
    relay = Relay((parsed.host or "127.0.0.1", parsed.port or 5432))
    through = parsed.set(host=INSIDE, port=relay.port).render_as_string(hide_password=False)
    check, loop = KeyCheck(through, lease=LEASE).start(), Loop()
    key, unseen = make(pg_url), make(pg_url)
    started = time.monotonic()
    try:
        until(lambda: remembered(check, loop, key), timeout=10)  # used through the gateway, remembered

        with Requests(check, loop, key) as asking:
            time.sleep(0.3)
            ip("link", "set", VETH, "down")  # silently: nothing tells either end
            cut = time.monotonic()
            time.sleep(0.2)
            began = time.monotonic()
            revoked = revoke_everywhere(session_factory(pg_url), key[3:11])  # from the database's side
            returned = time.monotonic()
            time.sleep(1.5)  # requests go on after the revoke returned

        with pytest.raises(DatabaseUnavailable):  # a key never seen, during the partition: a 503
            loop.caller(check, unseen)

        late = [a for a in asking.answers if a[0] >= returned and a[2] == "in"]
        assert late == [], f"{len(late)} requests of the revoked key were let in after revoke returned"
        after = [a for a in asking.answers if a[0] >= returned]
        assert after and {a[2] for a in after} <= {"unavailable", "refused"}
        assert any(a[2] == "in" and a[0] >= cut for a in asking.answers), "the key was not served from memory after the cut"
        assert revoked.gateways == 1 and revoked.unconfirmed == 1  # the cut-off gateway is listed and cannot answer
        assert revoked.waited_for_lease >= LEASE
        assert returned - began <= LEASE * (1 + RATE_MARGIN) + LEASE_MARGIN + CONFIRMING, f"revoke took {returned - began:.2f} s"
    finally:
        ip("link", "set", VETH, "up", check=False)  # healed, so that the check's connections end cleanly
        try:
            loop.close(check)
        finally:
            relay.close()
    assert time.monotonic() - started < 30
