#!/usr/bin/env python3
"""
Cost of the orchestrator's spawn mechanisms.

Three ways to start a child, compared in one run with a real epoll reactor,
in a process that has imported what the orchestrator imports:

- C{sessionSpawner(reactor)}: what the orchestrator uses when the tools
  exist (L{orchestrator.supervision.spawn.WrappedProcess}): Twisted's posix_spawn path
  with the session made by posix_spawn and the command behind C{setpriv
  --pdeathsig KILL --} (and C{env -C DIR} when DIR is not the current folder);
- C{sessionSpawner(reactor, wrapper=False)}: the fallback
  (L{orchestrator.supervision.spawn.SessionProcess}): Twisted's fork path with
  C{setsid()} + C{prctl(PR_SET_PDEATHSIG)} in the child before exec;
- plain C{reactor.spawnProcess}: posix_spawn, no session, no parent-death
  signal (the floor).

Each spawns C{/bin/true} N times (alternating in rounds, so drift and noise
hit all alike) and records:

- C{call}: how long the spawn call blocks the reactor (fork: until fork
  returns in the parent; posix_spawn (vfork): until the child has run its
  file actions and exec'd its first program);
- C{exit}: spawn call to C{processExited} (child set-up, exec(s), exit,
  SIGCHLD, reaping).

Then again with C{--ballast-mb} of touched memory in the parent (fork copies
the page tables of the whole parent, posix_spawn does not), and with
C{--fds} extra open descriptors (an orchestrator holds one probe connection
and two or three output pipes per child; Twisted's posix_spawn path asks
the child to close every one of them, and lists them in Python first).
Run with the project's venv Python.

Usage: .venv/bin/python bench/spawn_cost.py [--spawns 200] [--ballast-mb 256] [--fds 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred, inlineCallbacks  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402

# What the orchestrator itself imports, so the parent's size is realistic.
import orchestrator.app  # noqa: E402,F401
import orchestrator.web.server  # noqa: E402,F401
import orchestrator.builtin.notifiers  # noqa: E402,F401
import orchestrator.builtin.probes  # noqa: E402,F401
from orchestrator.supervision.spawn import sessionSpawner  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import rssMB, summary, table  # noqa: E402

TRUE = "/bin/true"
ENV = {"PATH": os.defpath}

WRAPPED = "sessionSpawner: posix_spawn + wrappers"
FORK = "sessionSpawner(wrapper=False): fork + setsid + pdeathsig"
PLAIN = "reactor.spawnProcess: posix_spawn, no session/pdeathsig"


class _Exited(ProcessProtocol):
    def __init__(self) -> None:
        self.done: Deferred = Deferred()

    def processExited(self, reason) -> None:
        self.done.callback(time.perf_counter())


def mechanisms() -> dict:
    wrapped = sessionSpawner(reactor)
    fork = sessionSpawner(reactor, wrapper=False)
    found = {}
    if getattr(wrapped, "mechanism", "") == "posix_spawn+wrappers":
        found[WRAPPED] = lambda protocol: wrapped(protocol, TRUE, [TRUE], ENV, None)
    found[FORK] = lambda protocol: fork(protocol, TRUE, [TRUE], ENV, None)
    found[PLAIN] = lambda protocol: reactor.spawnProcess(protocol, TRUE, [TRUE], ENV, None)
    return found


@inlineCallbacks
def measure(spawns: int, rounds: int = 5):
    chosen = mechanisms()
    results = {name: {"call": [], "exit": []} for name in chosen}
    perRound = max(1, spawns // rounds)
    for _ in range(rounds):
        for name, spawn in chosen.items():
            for _ in range(perRound):
                protocol = _Exited()
                t0 = time.perf_counter()
                spawn(protocol)
                t1 = time.perf_counter()
                exited = yield protocol.done
                results[name]["call"].append(t1 - t0)
                results[name]["exit"].append(exited - t0)
    return {name: {"call": summary(v["call"]), "exit": summary(v["exit"]),
                   "raw_call": v["call"], "raw_exit": v["exit"]}
            for name, v in results.items()}


@inlineCallbacks
def _all(args, data):
    scenarios = [("orchestrator's size", 0, 0)]
    if args.ballast_mb:
        scenarios.append((f"+{args.ballast_mb} MB", args.ballast_mb, 0))
    if args.fds:
        scenarios.append((f"+{args.fds} open fds", 0, args.fds))
    for label, extra, fds in scenarios:
        ballast = None
        sockets = []
        if extra:
            ballast = bytearray(extra * 1024 * 1024)
            for i in range(0, len(ballast), 4096):
                ballast[i] = 1  # touch every page
        for _ in range(fds // 2):
            sockets.extend(socket.socketpair())  # close-on-exec, like Twisted's
        rss = rssMB(os.getpid())
        openFDs = len(os.listdir("/proc/self/fd"))
        results = yield measure(args.spawns)
        data["runs"].append({"label": label, "ballast_mb": extra, "extra_fds": fds,
                             "open_fds": openFDs, "rss_mb": rss, "results": results})
        for s in sockets:
            s.close()
        del ballast


def report(data: dict) -> str:
    rows = []
    for run in data["runs"]:
        where = f"{run['rss_mb']:.0f} MB, {run['open_fds']} fds"
        res = run["results"]
        for name, r in res.items():
            rows.append([where, name,
                         f"{r['call']['median'] * 1e3:.3f} ms", f"{r['call']['p95'] * 1e3:.3f} ms",
                         f"{r['exit']['median'] * 1e3:.3f} ms", f"{r['exit']['p95'] * 1e3:.3f} ms",
                         r["call"]["n"]])
        for a, b, what in ((FORK, WRAPPED, "fork / wrapped"), (WRAPPED, PLAIN, "wrapped / plain")):
            if a in res and b in res:
                rows.append([where, f"ratio {what}",
                             f"{res[a]['call']['median'] / res[b]['call']['median']:.2f}x", "",
                             f"{res[a]['exit']['median'] / res[b]['exit']['median']:.2f}x", "", ""])
    return table(["parent", "mechanism", "spawn call median", "call p95",
                  "spawn -> processExited median", "exited p95", "n"], rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spawns", type=int, default=200)
    parser.add_argument("--ballast-mb", type=int, default=256)
    parser.add_argument("--fds", type=int, default=1000,
                        help="extra open descriptors for the third scenario (0: skip it)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data = {"spawns": args.spawns, "runs": []}
    failures = []

    def go():
        d = _all(args, data)
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()  # installs the SIGCHLD waker, as under twistd
    if failures:
        failures[0].raiseException()
    data["table"] = report(data)
    if args.json:
        print(json.dumps(data))
    else:
        print(data["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
