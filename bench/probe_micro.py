#!/usr/bin/env python3
"""
The Python side of one HTTP probe, without sockets: a L{HealthMonitor} with
the real http probe and its client, talking over in-memory transports
(iosim) to a server protocol that answers a fixed 130-byte response, on a
L{Clock}.  Process CPU time per probe, so what the orchestrator's own code
costs apart from the kernel's loopback and the reactor's polling.

Usage: .venv/bin/python bench/probe_micro.py [--probes 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from orchestrator.builtin.probes import HTTPProbe  # noqa: E402
from orchestrator.config.types import HealthConfig  # noqa: E402
from orchestrator.health.monitor import HealthMonitor, ProbeGate  # noqa: E402
from tests._memhttp import MemoryHTTP  # noqa: E402

ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n"
          b"Date: Wed, 02 Dec 2026 14:00:00 GMT\r\n\r\n{\"status\": \"ok\"}")


class _Answer(Protocol):
    def dataReceived(self, data):
        self.transport.write(ANSWER)


class _Process:
    name = "p"

    def monitorStatus(self, status, reason):
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=20000)
    args = parser.parse_args(argv)
    memory = MemoryHTTP(serverFactory=Factory.forProtocol(_Answer))
    clock = Clock()
    probe = HTTPProbe(HealthConfig(probe="http", url="http://127.0.0.1:1", timeout=1),
                      clock, connect=memory.connect)
    monitor = HealthMonitor(_Process(), HealthConfig(probe="http", interval=1, timeout=1), probe,
                            clock, managed=False, gate=ProbeGate())
    monitor.start()
    clock.advance(0.01)
    memory.flush()
    (pump,) = memory.pumps
    started = time.process_time()
    for _ in range(args.probes):
        clock.advance(1)
        pump.pump()  # request to the server, answer back
        pump.pump()
    elapsed = time.process_time() - started
    monitor.stop()
    assert monitor.successes == args.probes + 1, monitor.snapshot()
    print(f"{elapsed / args.probes * 1e6:.1f} us of CPU per probe (Python side, iosim included), "
          f"{args.probes} probes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
