"""``ManagedProcess.wait_http`` trusts only an answer from its own child: on a shared machine the
port that ``free_port()`` found can be taken by another program before the child binds it."""

from __future__ import annotations

import socket
import sys

import pytest

from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


def http_server(port: int, tmp_path, name: str = "server") -> ManagedProcess:
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    return ManagedProcess(name, cmd, {}, tmp_path / f"{name}.log")


def test_own_server_is_ready(tmp_path):
    port = free_port()
    process = http_server(port, tmp_path).start()
    try:
        process.wait_http(f"http://127.0.0.1:{port}/", timeout=30)
        assert process.listens_on(port)
    finally:
        process.stop()


def test_someone_elses_server_on_the_port_is_not_ours(tmp_path):
    """Another program answers on the port: wait_http must not return, and reports our child's
    failure to bind instead of talking to the wrong server."""
    other = http_server(free_port(), tmp_path, "other")
    port = int(other.cmd[3])
    other.start()
    try:
        other.wait_http(f"http://127.0.0.1:{port}/", timeout=30)
        ours = http_server(port, tmp_path, "ours").start()
        with pytest.raises(RuntimeError, match="exited with code"):
            ours.wait_http(f"http://127.0.0.1:{port}/", timeout=30)
        assert "Address already in use" in ours.tail()
        assert not ours.listens_on(port)
    finally:
        other.stop()


def test_a_port_nobody_listens_on(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
        process = http_server(free_port(), tmp_path).start()
        try:
            assert not process.listens_on(port)
        finally:
            process.stop()


def test_a_reserved_port_is_ours_while_its_server_is_down(tmp_path):
    """The CI failure of 2026-11-23: a test receiver stopped, another program took its port, and the
    restart failed. While down, a reserved port refuses connections and no other program (here an
    ``http.server`` subprocess, which sets SO_REUSEADDR) can bind it; our server comes back on it."""
    import requests

    from tests.harness import CaptureReceiver, ReservedPort

    port = ReservedPort()
    try:
        with pytest.raises(requests.ConnectionError):
            requests.post(port.url, timeout=5)
        other = http_server(port.port, tmp_path, "other").start()
        try:
            with pytest.raises(RuntimeError, match="exited with code"):
                other.wait_http(port.url + "/", timeout=30)
            assert "Address already in use" in other.tail()
        finally:
            other.stop()
        for _ in range(2):  # up, down, up again: the same port each time
            server = CaptureReceiver(port).start()
            try:
                assert requests.post(port.url + "/hook", data=b"x", timeout=5).status_code == 200
            finally:
                server.stop()
            with pytest.raises(requests.ConnectionError):
                requests.post(port.url, timeout=5)
    finally:
        port.release()


def test_free_port_is_outside_the_range_given_to_outgoing_connections():
    """An outgoing connection on the machine cannot take it before the child binds it."""
    from hokusai_mlflow_plugin.stack.process import ephemeral_range

    low, high = ephemeral_range()
    if low <= 4096:
        pytest.skip(f"this machine's ephemeral range starts at {low}: no room below it")
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20  # never the same port twice in a process
    assert all(1024 <= p < low for p in ports), (sorted(ports), low)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free indeed
