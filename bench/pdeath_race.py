#!/usr/bin/env python3
"""
Does a child spawned right before the orchestrator is SIGKILLed die with
it?  A parent (the project's venv Python, a real reactor) spawns
C{/bin/sleep} through C{orchestrator.supervision.spawn.sessionSpawner} and SIGKILLs
itself in the same reactor turn; after a pause the bench looks for the
sleep.  Repeated N times for the wrapped posix_spawn spawner and for the
fork fallback.  Every survivor is killed at the end.

It is a race: the parent's death (its own teardown takes milliseconds)
against the child's C{env} and C{setsid} execs before C{setpriv} sets the
parent-death signal.  On an idle machine the child usually wins; with the
CPUs busy (C{--load N} runs N busy loops meanwhile, as other work would)
it often loses.

Usage: .venv/bin/python bench/pdeath_race.py [--trials 20] [--pause 0.3] [--load 0]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

CHILD = r"""
import os, signal, sys
from twisted.internet import reactor
from twisted.internet.protocol import ProcessProtocol
from orchestrator.supervision.spawn import sessionSpawner
spawn = sessionSpawner(reactor, wrapper=sys.argv[1] == "wrapped")
def go():
    spawn(ProcessProtocol(), "/bin/sleep", ["/bin/sleep", sys.argv[2]], {"PATH": os.defpath}, None)
    os.kill(os.getpid(), signal.SIGKILL)
reactor.callWhenRunning(go)
reactor.run()
"""


def sleepers(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 2 and argv[0].endswith(b"sleep") and argv[1] == marker.encode():
            found.append(int(entry))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--load", type=int, default=0, help="busy loops running meanwhile")
    args = parser.parse_args(argv)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    base = 7000 + os.getpid() % 1000 * 100  # unusual sleep lengths mark our children
    survivors: list[int] = []
    try:
        for mode in ("wrapped", "fork"):
            alive = 0
            for i in range(args.trials):
                marker = f"{base + i}.{1 if mode == 'wrapped' else 2}"
                subprocess.run([sys.executable, "-c", CHILD, mode, marker], timeout=60,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(args.pause)
                found = sleepers(marker)
                survivors += found
                alive += bool(found)
            print(f"{mode}: {alive}/{args.trials} children outlived their parent's SIGKILL"
                  f" ({args.load} busy loops)")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
