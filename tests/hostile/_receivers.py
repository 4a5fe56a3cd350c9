"""
Webhook receivers for hostile tests: small TCP servers on 127.0.0.1, each
in its own thread, that read a request and then answer it badly (a huge
body, a body dripping a byte at a time, endless header lines) or well.

Everything is bounded: at most C{maxConnections} handlers at once (more
connections wait in the backlog), every handler ends at C{close()} or
after C{perConnection} seconds, and a flood stops after C{maxBytes}.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

from tests.hostile._api_attack import BACKEND

__all__ = ["Receiver", "backendWithNotifiers", "flood", "drip", "headerFlood", "ok"]

def backendWithNotifiers(*notifiers: str) -> str:
    """
    A L{tests.harness.startOrchestrator} template: the demo backend (the
    hostile tests' shared block, restarted at once however often it
    crashes) and the given notifier items (YAML flow mappings).
    """
    return ('admin: {listen: "tcp:{admin_port}:interface=127.0.0.1"}\nprocesses:\n' + BACKEND
            + "notifiers:\n" + "".join(f"  - {n}\n" for n in notifiers))


def _readRequest(conn: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    while len(body) < min(length, limit):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def flood(conn: socket.socket, stop: threading.Event, maxBytes: int = 1 << 30) -> int:
    """
    Answer 200 announcing 1 GiB and send it as fast as the client reads.
    """
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % maxBytes)
    chunk, sent = b"x" * 65536, 0
    while sent < maxBytes and not stop.is_set():
        conn.sendall(chunk)
        sent += len(chunk)
    return sent


def drip(conn: socket.socket, stop: threading.Event, every: float = 0.2) -> int:
    """
    Answer 200 with a large announced body and send it a byte at a time.
    """
    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
    sent = 0
    while not stop.wait(every):
        conn.sendall(b"x")
        sent += 1
    return sent


def headerFlood(conn: socket.socket, stop: threading.Event, maxBytes: int = 1 << 30) -> int:
    """
    Answer a status line and then header lines without end.
    """
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    sent, n = 0, 0
    while sent < maxBytes and not stop.is_set():
        line = b"x-flood-%d: %s\r\n" % (n, b"y" * 200)
        conn.sendall(line * 64)
        sent += len(line) * 64
        n += 1
    return sent


def ok(conn: socket.socket, stop: threading.Event) -> int:
    """
    Answer 204 and close.
    """
    conn.sendall(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
    return 0


class Receiver:
    """
    A TCP server on 127.0.0.1 answering each connection with C{answer}.

    @ivar requests: the raw requests read (head and body), in order.
    @ivar port: the port it listens on.
    """

    def __init__(self, answer: Callable, port: int = 0, maxConnections: int = 8,
                 perConnection: float = 30.0) -> None:
        self._answer = answer
        self._stop = threading.Event()
        self._slots = threading.Semaphore(maxConnections)
        self._perConnection = perConnection
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.requests: list[bytes] = []
        self._active: set[threading.Event] = set()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def webhookIds(self) -> list[str]:
        """
        The C{webhook-id} of every request read, in order.
        """
        ids = []
        with self._lock:
            requests = list(self.requests)
        for request in requests:
            for line in request.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"webhook-id":
                    ids.append(value.strip().decode())
        return ids

    def _accept(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                self._slots.release()
                continue
            thread = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _handle(self, conn: socket.socket) -> None:
        # A per-connection deadline, on top of close(): a handler never
        # outlives the test by more than perConnection seconds.
        stop = threading.Event()
        timer = threading.Timer(self._perConnection, stop.set)
        timer.start()
        with self._lock:
            self._active.add(stop)
        if self._stop.is_set():
            stop.set()
        try:
            conn.settimeout(self._perConnection)
            request = _readRequest(conn)
            with self._lock:
                self.requests.append(request)
            self._answer(conn, stop)
        except OSError:
            pass  # the client aborted: what the tests want it to do
        finally:
            timer.cancel()
            with self._lock:
                self._active.discard(stop)
            conn.close()
            self._slots.release()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for stop in self._active:
                stop.set()
        self._accepter.join(5)
        self._sock.close()
        deadline = time.monotonic() + 5
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
