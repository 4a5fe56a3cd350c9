#!/usr/bin/env python3
"""
Where the start-up time of C{twistd orchestrator} goes (issue 11): runs
twistd in this process with marks at each phase (twistd imported,
orchestrator.tap imported, reactor imported, configuration loaded,
service built, first and last spawn, reactor running, every child
exec'd) and the time spent inside C{posix_spawnp}, then exits (the
children die with it: parent-death signal).

Usage: .venv/bin/python bench/startup_timeline.py [--children 100] [--runs 3]
(each run in a fresh interpreter; the output is one line of marks per run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

T0 = time.monotonic()


def _child(n: int, directory: str) -> None:
    from _common import childrenOf  # (this script's folder is sys.path[0])

    marks: list[tuple[float, str]] = []

    def mark(what: str) -> None:
        marks.append((time.monotonic() - T0, what))

    import twisted.scripts.twistd as twistd
    mark("twistd imported")
    import orchestrator.tap as tap
    mark("orchestrator.tap imported")
    from twisted.internet import reactor
    mark("reactor imported")

    loadConfig, makeService = tap.loadConfig, tap.makeService

    def timedLoad(*args, **kwargs):
        mark("loadConfig start")
        try:
            return loadConfig(*args, **kwargs)
        finally:
            mark("loadConfig end")

    def timedMake(options):
        try:
            return makeService(options)
        finally:
            mark("makeService end")

    tap.loadConfig, tap.makeService = timedLoad, timedMake
    from orchestrator.supervision import spawn as _spawn

    sessionSpawner, spawned, inside = _spawn.sessionSpawner, [0], [0.0]

    def timedSpawner(*args, **kwargs):
        real = sessionSpawner(*args, **kwargs)

        def timed(*a, **k):
            spawned[0] += 1
            if spawned[0] == 1:
                mark("first spawn")
            try:
                return real(*a, **k)
            finally:
                if spawned[0] == n:
                    mark("last spawn returned")

        timed.mechanism = real.mechanism
        return timed

    _spawn.sessionSpawner = timedSpawner
    posixSpawnp = os.posix_spawnp

    def timedPosixSpawnp(*args, **kwargs):
        started = time.monotonic()
        try:
            return posixSpawnp(*args, **kwargs)
        finally:
            inside[0] += time.monotonic() - started

    os.posix_spawnp = timedPosixSpawnp
    sleep = os.path.realpath("/bin/sleep")

    def check():
        count = 0
        for child in childrenOf(os.getpid()):
            try:
                count += os.readlink(f"/proc/{child}/exe") == sleep
            except OSError:
                pass
        if count < n:
            reactor.callLater(0.002, check)
            return
        mark("all exec'd")
        line = "; ".join(f"{t * 1000:.0f} ms {what}" for t, what in marks)
        os.write(2, f"{line}; inside posix_spawnp {inside[0] * 1000:.0f} ms\n".encode())
        os._exit(0)

    reactor.callWhenRunning(lambda: (mark("reactor running"), check()))
    sys.argv = ["twistd", "-n", "--pidfile=", "orchestrator", "--config",
                os.path.join(directory, "orchestrator.yaml"), "--env-file", os.devnull]
    os.chdir(directory)
    twistd.run()


def main() -> int:
    import argparse

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import OUT, ROOT
    from scale import orchestratorYAML, programs
    from _common import compiled

    compiled(ROOT)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    directory = os.path.join(OUT, "startup-timeline")
    for _ in range(args.runs):
        subprocess.run(["rm", "-rf", directory], check=True)
        os.makedirs(directory)
        with open(os.path.join(directory, "orchestrator.yaml"), "w") as f:
            f.write(orchestratorYAML(directory, 0, programs(args.children)))
        subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(args.children), directory],
                       stdout=subprocess.DEVNULL, timeout=120)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())
