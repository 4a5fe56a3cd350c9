#!/usr/bin/env python3
"""
Not part of C{run_all.py}: the Python cost of one admin API request alone,
without sockets, the reactor or the kernel.

The admin site (C{AdminSite}, its C{AdminChannel} and the guarded tree) of
an orchestrator with C{--processes} HTTP-probed processes, on the tests'
fake process reactor (C{tests/test_api.py}'s C{ApiHarness}); one
connection on an in-memory transport is fed the same keep-alive request
again and again.  Best of 7 rounds of C{--requests} requests, per request;
C{--profile} adds the functions with the most own time.  What a real
server spends beyond this (C{bench/status_profile.py}, C{bench/scale.py})
is the reactor, the system calls and the kernel's loopback.

Usage: .venv/bin/python bench/request_path.py [--path /api/v1/processes/p0000]
       [--processes 100] [--requests 5000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import timeit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _yaml(processes: int) -> str:
    entries = "".join(f"""
  p{i:04d}:
    command: ["{{python}}", "-c", "pass"]
    url: "http://127.0.0.1:3000"
    health: {{interval: 1, start_timeout: 10}}
""" for i in range(processes))
    return 'admin:\n  listen: "tcp:8000:interface=127.0.0.1"\n  token: null\nprocesses:' + entries


def measure(path: str, processes: int, requests: int, profile: bool) -> float:
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    from orchestrator.web import AdminSite
    from tests.test_api import ApiHarness

    harness = ApiHarness(yaml=_yaml(processes))
    try:
        harness.reactor.advance(5)  # every process running, probed once
        site = AdminSite(harness.root, harness.admin, reactor=harness.reactor)
        site.startFactory()
        peer = IPv4Address("TCP", "127.0.0.1", 50000)
        channel = site.buildProtocol(peer)
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8000), peerAddress=peer)
        channel.makeConnection(transport)
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\n"
                   f"Accept: */*\r\n\r\n").encode()

        def one() -> None:
            channel.dataReceived(request)
            transport.clear()

        channel.dataReceived(request)
        head = transport.value().split(b"\r\n", 1)[0]
        if head != b"HTTP/1.1 200 OK":
            raise RuntimeError(f"GET {path} answered {head!r}")
        transport.clear()
        best = min(timeit.repeat(one, number=requests, repeat=7)) / requests
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(requests):
                one()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        channel.connectionLost(None)
        return best
    finally:
        harness.stopOrchestrator()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="/api/v1/processes/p0000")
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    # The harness writes its configuration into a temporary folder: this one,
    # removed at the end.
    with tempfile.TemporaryDirectory(prefix="orch-bench-request-path-") as scratch:
        tempfile.tempdir = scratch
        try:
            best = measure(args.path, args.processes, args.requests, args.profile)
        finally:
            tempfile.tempdir = None
    print(f"GET {args.path} ({args.processes} processes): {best * 1e6:.1f} µs per request "
          f"(Python only, in memory; best of 7 x {args.requests})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
