"""Child processes that stop with everything they started (``hokusai up``, the demo, the tests),
and free ports for them to bind."""

from __future__ import annotations

import collections
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_given: collections.deque[int] = collections.deque(maxlen=256)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, for a server that a child process will bind.

    Chosen below the kernel's ephemeral range where possible: the kernel gives ports of that range
    to every outgoing connection on the machine, and one of them could take the port between now
    and the child's bind (seen on CI, with hundreds of connections a second). A port outside the
    range can only be taken by another program binding it on purpose.
    """
    low, _ = ephemeral_range()
    if low > 4096:
        for port in random.sample(range(max(1024, low - 12000), low), 64):
            if port in _given:
                continue  # given to an earlier caller, which may not have bound it yet
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue  # in use (or in TIME_WAIT): another
                _given.append(port)
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ManagedProcess:
    """A child process in its own process group, stopped with everything it started."""

    def __init__(self, name: str, cmd: list[str], env: dict, log_path: Path | None, die_with_parent: bool = False):
        self.name = name
        self.die_with_parent = die_with_parent
        self.cmd = cmd
        self.env = env
        self.log_path = Path(log_path) if log_path else None  # None: inherit our stdout
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ManagedProcess":
        log = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT if log else None, start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own copy
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        port = urlsplit(url).port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}:\n" + self.tail()
                )
            try:
                # An answer counts only from our own process: a port taken between free_port() and
                # the bind is answered by someone else's server until ours gives up on it.
                if requests.get(url, timeout=1).status_code < 500 and self.listens_on(port):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not answer {url} within {timeout:.0f}s; see {self.log_path}")

    def listens_on(self, port: int | None) -> bool:
        """Whether a process of our child's group holds the listening socket of ``port``."""
        return port is None or self.proc is None or group_listens_on(self.proc.pid, port)

    def tail(self, lines: int = 30) -> str:
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever of it outlived the leader."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the child leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the parent dies, even by SIGKILL, so
    that a killed ``hokusai up`` leaves no server behind. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# -- who listens on a port (Linux) ------------------------------------------------------------------


def group_listens_on(pgid: int, port: int) -> bool:
    """Whether a process of group ``pgid`` holds the listening socket of TCP ``port`` (Linux's
    /proc; True where it cannot be known)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return True
    return any(_holds_socket(pid, inodes) for pid in _group_pids(pgid))


def _listening_inodes(port: int) -> set[str] | None:
    """The socket inodes listening on TCP ``port``; None where /proc/net is not readable."""
    inodes: set[str] = set()
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            # local address "HEXIP:HEXPORT", state 0A is LISTEN, inode is the tenth field
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes if found_table else None


def _group_pids(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` (our child leads its own group)."""
    return processes_where(pgrp=pgid)


def processes_where(ppid: int | None = None, pgrp: int | None = None) -> list[int]:
    """The pids of the processes whose parent is ``ppid`` or whose process group is ``pgrp``
    (Linux ``/proc``; empty elsewhere)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its ")"
            fields = stat.rsplit(")", 1)[1].split()
            if (ppid is not None and int(fields[1]) == ppid) or (pgrp is not None and int(fields[2]) == pgrp):
                pids.append(int(entry.name))
    return pids


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False
