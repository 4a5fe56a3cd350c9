"""
Hostile requests against a real orchestrator's admin API: deeply nested
JSON bodies, and a flood of connections dripping their requests past
C{admin.max_connections}.  Each attack is bounded in count and time and
asserts the orchestrator's RSS and descriptors stay bounded and a crash is
still respawned within 1 s.
"""

from __future__ import annotations

import json
import urllib.error

import pytest

from tests import harness
from tests.hostile import _watch
from tests.hostile._api_attack import (BACKEND, closeAll, drip, dripping, nestedJSON, rejected,
                                      silentStreams)

pytestmark = pytest.mark.integration

CONFIG = """\
admin:
  listen: "tcp:{admin_port}:interface=127.0.0.1"
  max_connections: 20
  max_stream_clients: 20
  header_timeout: 3
processes:
""" + BACKEND

ROUTES = ["/api/v1/admin/backend/start", "/api/v1/processes/backend/restart", "/api/v1/admin/reload"]


def test_nested_json(run_orchestrator):
    """Bodies nested 30000 deep on every POST route are 400 JSON, never a RecursionError; RSS and fds stay flat."""
    orchestrator = run_orchestrator(CONFIG)
    pid = orchestrator.waitHealthy() and orchestrator.process.pid
    body = nestedJSON(30_000)
    answers = []

    def attack():
        for path in ROUTES:
            status, _, raw = harness.http("POST", orchestrator.url + path, body=body,
                                          headers={"Content-Type": "application/json"}, timeout=10)
            answers.append((status, json.loads(raw)))

    usage = _watch.sample(pid, 3, every=0.2, during=attack)
    _watch.assertRespawns(orchestrator)
    usage.assertBounded(rssBytes=16 * 2**20, fds=10)
    assert answers and all(status == 400 for status, _ in answers), answers[:3]
    assert {a["error"] for _, a in answers} == {
        "the request body nests JSON arrays and objects deeper than admin.max_json_depth (32 levels)"}
    assert rejected(orchestrator.url)["json_too_deep"] == len(answers)
    log = orchestrator.log()
    assert "RecursionError" not in log and "Traceback" not in log


def test_connection_flood(run_orchestrator):
    """60 connections dripping a byte a second past max_connections: the oldest are closed, the API answers, fds stay bounded, crashes respawn within 1 s; with every connection busy a new one gets 503."""
    orchestrator = run_orchestrator(CONFIG)
    orchestrator.waitHealthy()
    pid = orchestrator.process.pid
    sockets = dripping(orchestrator.adminPort, 60)
    try:
        usage = _watch.sample(pid, 2.5, every=0.5, during=lambda: drip(sockets))
        assert orchestrator.status()["pid"]  # a new connection got its room
        _watch.assertRespawns(orchestrator)
        usage.take()
        # The flood is cut at admin.header_timeout whatever it sends.
        harness.waitFor(lambda: drip(sockets) == 0 or rejected(orchestrator.url)["header_timeout"] >= 19,
                        15, interval=0.5, what="the dripping connections to be cut off")
    finally:
        closeAll(sockets)
    usage.assertBounded(rssBytes=16 * 2**20, fds=20 + 10)
    counts = rejected(orchestrator.url)
    assert counts["evicted"] >= 40, counts
    assert counts["header_timeout"] >= 1, counts

    streams = silentStreams(orchestrator.adminPort, 20)  # every connection busy
    try:
        assert all(s.recv(12) == b"HTTP/1.1 200" for s in streams)
        status, _, raw = harness.http("GET", orchestrator.url + "/api/v1/processes", timeout=10)
        assert status == 503
        assert json.loads(raw)["error"] == ("too many connections to the admin API "
                                            "(admin.max_connections: 20); try again later")
    finally:
        closeAll(streams)
    # Their slots are free once the server has read the 20 ends; a request
    # that gets there first is refused like the one above (a 503).
    counts = harness.waitFor(lambda: _unlessRefused(orchestrator.url), 10, interval=0.05,
                             what="the closed streams' connections to be freed")
    assert counts["connections"] >= 1


def _unlessRefused(url: str) -> dict | None:
    try:
        return rejected(url)
    except urllib.error.HTTPError as e:
        if e.code != 503:
            raise
        return None
