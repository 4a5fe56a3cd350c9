#!/usr/bin/env python3
"""
Not part of C{run_all.py}: the ceiling of the status load itself on this
machine.  C{bench/scale.py}'s status phase drives every HTTP server with
the same closed-loop load generator (C{bench/api.py}: Python threads on
C{http.client}), which costs CPU per answer too (0.14 ms, its own column
in the status table), on the same 2 cores as the server.  This runs that
generator, in the same shapes (1 connection; 2 processes x 4 connections)
against a server that does as little as a server can: one C{asyncio}
protocol answering every request on a keep-alive connection with the same
prepared bytes (the size of an orchestrator status answer, 674 B), no
parsing beyond finding the end of the head.

What it answers is the most any server could be measured at here; a
target above it (a ratio to another tool's rate) cannot be met by any
server on this machine with this load.

Usage: .venv/bin/python bench/load_ceiling.py [--duration 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import CPUMeter, log, machineInfo, table, writeResult  # noqa: E402
from api import load  # noqa: E402

SHAPES = (("1 connection", 1, 1), ("2x4 connections", 2, 4))
BODY = b"x" * 520
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
MAX_HEAD = 16384  # a bound on what one connection may send without an end of head


class _Fixed(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self._transport = transport
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._transport.close()
                return
            self._buffer = self._buffer[end + 4:]
            self._transport.write(ANSWER)


def _serve(ready: threading.Event, box: dict) -> None:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(_Fixed, "127.0.0.1", 0))
    box["port"] = server.sockets[0].getsockname()[1]
    box["loop"] = loop
    ready.set()
    loop.run_forever()
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    # The server is a thread of this process: its CPU is this process's.
    ready, box = threading.Event(), {}
    thread = threading.Thread(target=_serve, args=(ready, box), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the fixed-answer server did not start")
    runs: dict = {shape: [] for shape, _, _ in SHAPES}
    try:
        for _ in range(args.repeat):
            for shape, workers, connections in SHAPES:
                meter = CPUMeter(os.getpid()).start()
                run = load(box["port"], "GET", "/api/v1/processes/p0000", b"", {}, workers, connections,
                           0.5, args.duration)
                run["server_cpu_percent"] = meter.stop()
                runs[shape].append(run)
                log(f"  fixed answer, {shape}: {run['rps']:.0f}/s, server CPU {run['server_cpu_percent']:.0f}%, "
                    f"errors {run['errors']}")
    finally:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join(10)
    rows = []
    for shape, _, _ in SHAPES:
        rates = [r["rps"] for r in runs[shape]]
        rows.append([shape, f"{statistics.median(rates):.0f}", ", ".join(f"{r:.0f}" for r in rates),
                     f"{statistics.median(r['server_cpu_percent'] for r in runs[shape]):.0f}%",
                     sum(r["errors"] for r in runs[shape])])
    text = table(["load (bench/api.py's generator)", "answers/s, median", "each run", "server CPU", "errors"],
                 rows)
    writeResult("load-ceiling", {"machine": machineInfo(), "args": vars(args), "runs": runs, "table": text})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
