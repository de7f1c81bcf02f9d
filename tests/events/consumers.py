"""Misbehaving network peers for the fault tests, on reserved loopback ports: a TCP proxy in front
of a real service that can go down and come back, and an HTTP consumer that hangs."""

from __future__ import annotations

import socket
import threading

from tests.harness import ReservedPort


class _Listener:
    """A listening socket on a ``ReservedPort`` and the connections it accepted; ``close()`` cuts
    them all, and new connections are then refused (the reservation does not listen)."""

    def __init__(self):
        self.port = ReservedPort()
        self.accepted = 0
        self._socket: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self):
        self._socket = self.port.listen()
        threading.Thread(target=self._accept, args=(self._socket,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                self.accepted += 1
                self._open.append(conn)
            self.serve(conn)

    def serve(self, conn: socket.socket) -> None:  # pragma: no cover
        raise NotImplementedError

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.append(sock)

    def close(self) -> None:
        if self._socket is not None:
            _cut(self._socket)  # shutdown() wakes the accept() blocked in its thread
            self._socket = None
        with self._lock:
            for sock in self._open:
                _cut(sock)
            self._open.clear()

    def release(self) -> None:
        self.close()
        self.port.release()


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TcpProxy(_Listener):
    """Forwards every connection to ``target``. ``close()`` is the service going down (open
    connections cut, new ones refused), ``open()`` its coming back on the same port."""

    def __init__(self, host: str, port: int):
        super().__init__()
        self.target = (host, port)

    def serve(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _cut(conn)
            return
        upstream.settimeout(None)
        self.track(upstream)
        self.relay(conn, upstream)

    def relay(self, conn: socket.socket, upstream: socket.socket) -> None:
        for src, dst in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()


class ReplyLosingProxy(TcpProxy):
    """Forwards every connection to ``target``, but once a client has sent ``command`` the reply to
    it is never passed on: the connection is cut as it arrives (the command was carried out, its
    answer lost, as when a network drops between the two)."""

    def __init__(self, host: str, port: int, command: bytes):
        super().__init__(host, port)
        self.command = command
        self.lost = 0

    def relay(self, conn: socket.socket, upstream: socket.socket) -> None:
        sent = threading.Event()

        def requests() -> None:
            try:
                while data := conn.recv(65536):
                    if self.command in data:
                        sent.set()  # before it is passed on: its answer cannot arrive first
                    upstream.sendall(data)
            except OSError:
                pass

        def replies() -> None:
            try:
                while data := upstream.recv(65536):
                    if sent.is_set():
                        with self._lock:
                            self.lost += 1
                        break
                    conn.sendall(data)
            except OSError:
                pass
            _cut(conn)
            _cut(upstream)

        threading.Thread(target=requests, daemon=True).start()
        threading.Thread(target=replies, daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for sock in (src, dst):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class HangingConsumer(_Listener):
    """An HTTP consumer that accepts every connection, reads what is sent, and never answers."""

    @property
    def url(self) -> str:
        return self.port.url

    def serve(self, conn: socket.socket) -> None:
        threading.Thread(target=_drain, args=(conn,), daemon=True).start()


def _drain(conn: socket.socket) -> None:
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
