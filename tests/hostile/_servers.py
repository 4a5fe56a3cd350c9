"""
Small hostile HTTP servers for the probe attacks, on 127.0.0.1 only.

Each answers its very first request like a healthy backend (so the probed
process becomes C{running} and later results are recorded), then attacks
every later request: endless header lines, headers then a body dripped
one byte at a time, or a huge body.  Bounded in every way: at most
C{maxConnections} handler threads, at most C{maxBytes} sent per
connection, and everything closed by C{stop()}.
"""

from __future__ import annotations

import socket
import threading
import time

__all__ = ["HostileServer", "ATTACKS"]

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _headerFlood(conn: socket.socket, server: HostileServer) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Flood: " + b"a" * 1000 + b"\r\n"
    block = line * 64
    while server.send(conn, block):
        pass


def _drip(conn: socket.socket, server: HostileServer) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
    while server.send(conn, b"x"):
        time.sleep(0.02)


def _hugeBody(conn: socket.socket, server: HostileServer) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
    block = b"y" * 65536
    while server.send(conn, block):
        pass


#: Attack name -> what the server does after the first healthy answer.
ATTACKS = {"header_flood": _headerFlood, "drip": _drip, "huge_body": _hugeBody}


class HostileServer:
    """
    A listening socket whose connections run C{attack} after one healthy
    answer.

    @ivar accepted: connections accepted so far.
    @ivar open: connections whose handler is still running (the client has
        not closed them yet).
    """

    def __init__(self, attack: str, maxConnections: int = 64, maxBytes: int = 256 * 2**20) -> None:
        self._attack = ATTACKS[attack]
        self._maxConnections = maxConnections
        self._maxBytes = maxBytes
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._sent: dict[int, int] = {}
        self._sockets: list[socket.socket] = []
        self._greeted = False
        self.accepted = 0
        self.open = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def send(self, conn: socket.socket, data: bytes) -> bool:
        """
        Send C{data} unless stopped, over budget or closed by the client;
        C{False} when the attack on this connection is over.
        """
        if self._stopped.is_set():
            return False
        sent = self._sent.get(id(conn), 0)
        if sent + len(data) > self._maxBytes:
            return False
        try:
            conn.sendall(data)
        except OSError:
            return False
        self._sent[id(conn)] = sent + len(data)
        return True

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(5)
        self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for conn in sockets:
            try:
                conn.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self.open >= self._maxConnections:
                    conn.close()
                    continue
                self.open += 1
                self._sockets.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _readRequest(self, conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return False
            if not chunk or len(data) > 65536 or self._stopped.is_set():
                return False
            data += chunk
        return True

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if not self._readRequest(conn):
                return
            with self._lock:
                greet, self._greeted = not self._greeted, True
            if greet and not (self.send(conn, _OK) and self._readRequest(conn)):
                return
            self._attack(conn, self)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self._lock:
                self.open -= 1
