"""Silent partitions for tests and the chaos run (issue 25): network namespaces made and removed by
the run itself, each joined to the root namespace by a veth pair, and TCP relays whose listening
end lives inside one.

A process in the root namespace reaches a server (PostgreSQL, MLflow) through ``link.inside`` and
a relay, instead of directly: ``link.cut()`` then silences every connection on that path, no FIN,
no RST, as a failed switch does, and ``link.heal()`` brings it back with its connections. The cut
is the namespace's end of the pair (``ip -n <ns> link set <veth> down``): the root's route stays,
so packets are dropped on the pair and a connect waits for its deadline. Downing the root's end
instead removes the route, and on a machine with a default route the packets leave by it.

Needs root and iproute2: ``why_not()`` says why it cannot run here. Names carry the pid of the
process that made them, so two runs at once do not collide, and ``sweep()`` removes what a run
that was killed left behind (its pid no longer alive).

    python -m tests.netns NAMESPACE:INSIDE:PORT=HOST:PORT ...   # relays, until SIGTERM (the chaos run's)
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass

PREFIX = "hk"  # every namespace and veth made here: hk<pid>-<tag> and hk<pid><tag>0|1
POOL = ipaddress.ip_network("10.231.0.0/16")  # /30s for the pairs, in the root namespace too
_LOCK = "/tmp/hokusai-netns.lock"  # addresses are picked and taken under it (runs at once)
_CLONE_NEWNET = 0x40000000


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


def why_not() -> str | None:
    """Why partitions cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root for ip netns (CI runs as root)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    if not os.path.isdir("/run/netns") and ip("netns", "list", check=False).returncode != 0:
        return "ip netns does not work here"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> list[str]:
    """Remove the namespaces and veths of runs whose process is gone; returns what was removed."""
    removed = []
    for name in ip("netns", "list", check=False).stdout.split():
        m = re.fullmatch(rf"{PREFIX}(\d+)-\w+", name)
        if m and not _alive(int(m[1])):
            ip("netns", "del", name, check=False)
            removed.append(name)
    for m in re.finditer(rf"^\d+: ({PREFIX}(\d+)\w+0)[@:]", ip("-o", "link", "show", check=False).stdout, re.MULTILINE):
        if not _alive(int(m[2])):
            ip("link", "del", m[1], check=False)
            removed.append(m[1])
    return removed


def _taken() -> set[ipaddress.IPv4Network]:
    found = re.findall(r"inet (10\.231\.\d+\.\d+)/(\d+)", ip("-o", "-4", "addr", "show", check=False).stdout)
    return {ipaddress.ip_network(f"{a}/{n}", strict=False) for a, n in found}


@dataclass
class Link:
    """A namespace of its own and the veth pair that joins it to the root namespace."""

    tag: str  # up to 4 letters: what the link carries ("gwpg": the gateway to PostgreSQL)
    namespace: str = ""
    veth: str = ""  # the root's end
    veth_inside: str = ""  # the namespace's end: the one cut
    outside: str = ""  # the root end's address
    inside: str = ""  # the namespace end's address: where relays listen
    made: bool = False
    is_cut: bool = False

    def __post_init__(self):
        if not re.fullmatch(r"[a-z0-9]{1,4}", self.tag):
            raise ValueError(f"a link's tag is 1 to 4 lower-case letters or digits, not {self.tag!r}")
        pid = os.getpid()
        self.namespace = f"{PREFIX}{pid}-{self.tag}"
        self.veth, self.veth_inside = f"{PREFIX}{pid}{self.tag}0", f"{PREFIX}{pid}{self.tag}1"

    def make(self) -> Link:
        """Make the namespace and the pair, with a /30 of ``POOL`` that no interface holds."""
        self.remove()  # one of ours from an earlier attempt of this process
        with open(_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = _taken()
            net = next(n for n in POOL.subnets(new_prefix=30) if not any(n.overlaps(t) for t in taken))
            outside, inside = (str(h) for h in net.hosts())
            self.made = True  # from here remove() has something to remove
            ip("netns", "add", self.namespace)
            ip("link", "add", self.veth, "type", "veth", "peer", "name", self.veth_inside, "netns", self.namespace)
            ip("addr", "add", f"{outside}/30", "dev", self.veth)
        ip("link", "set", self.veth, "up")
        ip("-n", self.namespace, "addr", "add", f"{inside}/30", "dev", self.veth_inside)
        ip("-n", self.namespace, "link", "set", self.veth_inside, "up")
        ip("-n", self.namespace, "link", "set", "lo", "up")
        self.outside, self.inside = outside, inside
        return self

    def cut(self) -> None:
        """Silently: nothing tells either end."""
        ip("-n", self.namespace, "link", "set", self.veth_inside, "down")
        self.is_cut = True

    def heal(self) -> None:
        ip("-n", self.namespace, "link", "set", self.veth_inside, "up")
        self.is_cut = False

    def remove(self) -> None:
        ip("netns", "del", self.namespace, check=False)  # takes its end of the pair, and so the pair, with it
        ip("link", "del", self.veth, check=False)
        self.made = False


def link_for_test(tag: str):
    """For a pytest fixture (``yield from``): a link made for the test and removed even when it
    fails; a skip with the reason where partitions cannot be made (tests/conftest.py's CI rule
    makes that skip a failure on CI)."""
    import pytest

    why = why_not()
    made = Link(tag)
    if why is None:
        sweep()  # what a run that was killed left behind
        try:
            made.make()
        except subprocess.CalledProcessError as e:
            made.remove()
            why = f"cannot make a network namespace here: {e.stderr.strip() or e}"
    if why is not None:
        pytest.skip(why)
    try:
        yield made
    finally:
        made.remove()


def listening_inside(namespace: str, host: str, port: int = 0) -> socket.socket:
    """A listening socket on ``host:port`` made in ``namespace`` by a thread of its own (a network
    namespace is a thread's: the rest of the process stays in the root namespace, and so do the
    connections it makes)."""
    libc = ctypes.CDLL(None, use_errno=True)
    made: dict = {}

    def enter_and_listen():
        try:
            target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
        except OSError as e:
            made["error"] = e
            return
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                made["error"] = OSError(ctypes.get_errno(), "setns")
                return
            made["socket"] = socket.create_server((host, port), reuse_port=False)
        except OSError as e:
            made["error"] = e
        finally:
            os.close(target)  # the thread ends here, inside the namespace: nothing else runs in it

    thread = threading.Thread(target=enter_and_listen)
    thread.start()
    thread.join(10)
    if "error" in made:
        raise made["error"]
    return made["socket"]


class Relays:
    """TCP relays, each from ``inside:port`` of a namespace to a target in the root namespace, on
    one event loop in a thread of their own. A side that closes is closed on the other (a server
    killed is seen by its client); a side that falls silent is not (that is the partition)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="netns-relays", daemon=True)
        self._thread.start()

    def add(self, namespace: str, inside: str, target: tuple[str, int], port: int = 0) -> int:
        """Relay ``inside:port`` (in ``namespace``) to ``target``; returns the port."""
        sock = listening_inside(namespace, inside, port)

        async def start():
            self._servers.append(await asyncio.start_server(lambda r, w: self._connection(r, w, target), sock=sock))

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return sock.getsockname()[1]

    async def _connection(self, reader, writer, target):
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), 5)
        except (TimeoutError, OSError):
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    def close(self) -> None:
        async def stop():
            for server in self._servers:
                server.close()
            for w in list(self._writers):
                w.close()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        try:
            writer.write_eof()  # the other side hears the end, as it would from the server itself
        except (OSError, RuntimeError):
            pass


def main(argv: list[str]) -> int:
    """Relays until SIGTERM; prints ``ready`` once every one listens."""
    relays = Relays()
    for spec in argv:
        m = re.fullmatch(r"([\w-]+):([\d.]+):(\d+)=([\w.-]+):(\d+)", spec)
        if not m:
            print(f"a relay is NAMESPACE:INSIDE:PORT=HOST:PORT, not {spec!r}", file=sys.stderr)
            return 2
        relays.add(m[1], m[2], (m[4], int(m[5])), int(m[3]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(1.0):
        pass
    relays.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
