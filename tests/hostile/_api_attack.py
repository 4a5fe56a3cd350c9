"""
Hostile clients of the admin API, on 127.0.0.1, each bounded in count:
event-stream readers that never read, a flood of connections that drip
their request, and a deeply nested JSON body.  Shared by the hostile
tests and C{bench/api_attack.py}.
"""

from __future__ import annotations

import contextlib
import socket

__all__ = ["BACKEND", "CRASH_STORM", "closeAll", "drip", "dripping", "nestedJSON", "rejected",
           "sendQueueBytes", "silentStreams"]

#: The demo backend as the supervised process (what a respawn is measured
#: on), under C{processes:}.
BACKEND = """\
  backend:
    command: ["{python}", "{demo}", "--port", "{backend_port}"]
    url: "http://127.0.0.1:{backend_port}"
    restart: {policy: always, max_attempts: 1000, interval: 0}
    health: {interval: 5, timeout: 2, start_timeout: 20}
"""

#: A process that exits at once, restarted as fast as the policy allows:
#: a steady stream of events (starting, crashed, restart_scheduled...).
CRASH_STORM = """\
  crasher:
    command: ["/bin/false"]
    start: {ready_after: 0.05}
    health: {probe: none}
    restart: {policy: always, interval: 0, max_attempts: 100000000}
    log: {echo: false}
"""


def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # A small receive window, so the server's side fills sooner.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    return s


def silentStreams(port: int, count: int, rcvbuf: int = 4096) -> list[socket.socket]:
    """
    Open C{count} event streams that never read a byte.
    """
    request = (f"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    sockets = []
    for _ in range(count):
        s = _connect(port, rcvbuf)
        s.sendall(request)
        sockets.append(s)
    return sockets


def dripping(port: int, count: int) -> list[socket.socket]:
    """
    Open C{count} connections that each sent the first bytes of a request
    and mean to send the rest a byte at a time (see L{drip}); connections
    the server refuses at once are closed and not returned.
    """
    sockets = []
    for _ in range(count):
        try:
            s = _connect(port)
            s.sendall(b"GET /api/v1/processes HTTP/1.1\r\n")
        except OSError:
            continue
        sockets.append(s)
    return sockets


def drip(sockets: list[socket.socket]) -> int:
    """
    Send one more header byte on each connection; returns how many the
    server still accepted bytes on.
    """
    alive = 0
    for s in sockets:
        try:
            s.send(b"X")
            alive += 1
        except OSError:
            pass
    return alive


def nestedJSON(depth: int) -> bytes:
    """
    An array nested C{depth} deep: far past Python's recursion limit it is
    a C{RecursionError} in C{json.loads}.
    """
    return b"[" * depth + b"]" * depth


def closeAll(sockets: list[socket.socket]) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.close()


def rejected(url: str) -> dict[str, float]:
    """
    C{orchestrator_admin_rejected_total} by reason, read from C{/metrics}.
    """
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith('orchestrator_admin_rejected_total{reason="'):
            reason = line.split('"')[1]
            counts[reason] = float(line.rsplit(" ", 1)[1])
    return counts


def sendQueueBytes(port: int) -> int:
    """
    Bytes waiting in the kernel send queues of the TCP sockets whose local
    port is C{port} (C{tx_queue} of C{/proc/net/tcp}): memory the
    orchestrator's RSS does not show.
    """
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        total += int(fields[4].split(":")[0], 16)
        except OSError:
            pass
    return total
