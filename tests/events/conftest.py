"""Fixtures of the events tests: HTTP receivers that capture what the relay sends."""

from __future__ import annotations

import pytest

from tests.harness import CaptureReceiver, ReservedPort


@pytest.fixture
def sink_server():
    servers = []

    def make(port: ReservedPort | None = None) -> CaptureReceiver:
        server = CaptureReceiver(port).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


