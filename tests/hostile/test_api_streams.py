"""
Event-stream clients that never read, during a crash storm, against a real
orchestrator: each is held to its buffer bound, dropped (counted as an
overflow), its connection released, and supervision keeps its latency.
"""

from __future__ import annotations

import socket

import pytest

from tests import harness
from tests.hostile import _watch
from tests.hostile._api_attack import (BACKEND, CRASH_STORM, closeAll, rejected, sendQueueBytes,
                                      silentStreams)

pytestmark = pytest.mark.integration

CLIENTS = 100

CONFIG = """\
admin:
  listen: "tcp:{admin_port}:interface=127.0.0.1"
  max_stream_clients: 150
  max_connections: 200
  stream_buffer_bytes: 16384
processes:
""" + BACKEND + CRASH_STORM


def test_silent_stream_readers_during_a_crash_storm(run_orchestrator):
    """100 stream clients that never read are each dropped at the buffer bound; RSS, fds and send queues stay bounded; a crash is respawned within 1 s."""
    orchestrator = run_orchestrator(CONFIG)
    orchestrator.waitHealthy()
    pid = orchestrator.process.pid
    port = orchestrator.adminPort
    before = _watch.fdCount(pid)
    sockets = silentStreams(port, CLIENTS)
    queues = []
    try:
        def dropped():
            queues.append(sendQueueBytes(port))
            return rejected(orchestrator.url).get("stream_overflow", 0) >= CLIENTS

        usage = _watch.sample(pid, 3, every=0.25, during=lambda: queues.append(sendQueueBytes(port)))
        _watch.assertRespawns(orchestrator)
        harness.waitFor(dropped, 60, interval=0.25, what=f"all {CLIENTS} silent clients to overflow")
        usage.take()
        # Dropped clients are released: at once, or after the grace for
        # their last words.
        harness.waitFor(lambda: _watch.fdCount(pid) <= before + 10, 15, interval=0.25,
                        what="the dropped clients' connections to close")
    finally:
        closeAll(sockets)
    # Per client at most the 16 KiB queue, Twisted's 64 KiB write buffer and
    # the socket's 128 KiB send buffer; all 100 together well under 48 MiB.
    usage.assertBounded(rssBytes=48 * 2**20, fds=CLIENTS + 25)
    assert max(queues) <= CLIENTS * 200 * 1024, f"kernel send queues reached {max(queues)} bytes"
    assert rejected(orchestrator.url).get("stream_overflow") == CLIENTS


def test_stream_client_cap(run_orchestrator):
    """Past admin.max_stream_clients a new stream is a 503 JSON, counted, and the API still answers; RSS and fds stay bounded and a crash is respawned within 1 s."""
    orchestrator = run_orchestrator(CONFIG.replace("max_stream_clients: 150", "max_stream_clients: 5"))
    orchestrator.waitHealthy()
    usage = _watch.Usage(orchestrator.process.pid)
    usage.take()
    sockets = silentStreams(orchestrator.adminPort, 5)
    refused = []
    try:
        for _ in range(20):  # bounded: 20 refused streams
            status, headers, body = harness.http("GET", f"{orchestrator.url}/api/v1/events/stream",
                                                 timeout=10)
            refused.append((status, body))
            usage.take()
        assert orchestrator.status()["pid"]  # the rest of the API answers
        _watch.assertRespawns(orchestrator)
        usage.take()
    finally:
        closeAll(sockets)
    assert all(status == 503 for status, _ in refused), refused[:2]
    assert all(body.startswith(b'{"success": false, "error": "too many stream clients')
               for _, body in refused)
    assert rejected(orchestrator.url)["stream_clients"] == len(refused)
    # Five streams held, each with a socket of its own (and a respawn's pipes).
    usage.assertBounded(rssBytes=16 * 2**20, fds=5 + 10)

    def streamOpens():  # the slots come back once the clients are gone
        with socket.create_connection(("127.0.0.1", orchestrator.adminPort), timeout=5) as s:
            s.sendall(f"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1:{orchestrator.adminPort}"
                      "\r\n\r\n".encode())
            return s.recv(64).startswith(b"HTTP/1.1 200")

    harness.waitFor(streamOpens, 10, interval=0.2, what="a stream slot to be free again")
