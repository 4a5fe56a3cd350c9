#!/usr/bin/env python3
"""
Not part of C{run_all.py}: the resident memory of C{twistd} before any
orchestrator code, step by step, next to the orchestrator itself with one
child (C{bench/footprint.py}'s measurement), in one run.

Each floor is a C{twistd -n -y floor.tac} (the way Twisted's procmon runs,
which skips the plugin scan C{twistd orchestrator} pays) with TLS left out
as the orchestrator leaves it out (C{orchestrator.tls.leaveOut}, before the
reactor is imported), and adds one thing to the one before:

 1. nothing: twistd, its reactor and an empty application;
 2. the admin API's floor: a C{twisted.web} C{Site} listening through an
    endpoint on 127.0.0.1, and one C{/bin/sleep} child spawned by the
    reactor;
 3. the same plus the libraries the orchestrator's configuration and
    notifiers need (yaml, pluggy, dotenv);
 4. the same plus prometheus_client (the metrics).

Each sample waits C{--settle} seconds after the tac says it is ready (a
file it writes), reads C{VmRSS} from C{/proc/PID/status}, and stops it.

Usage: .venv/bin/python bench/footprint_floor.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (OUT, PYTHON, ROOT, compiled, freePort, killTree, log, machineInfo, spawn,  # noqa: E402
                     table, waitFor, writeResult)
from footprint import procStatus, sample  # noqa: E402

MIB = 1024 * 1024

# Run twistd the way the orchestrator's plugin does, TLS left out first.
_RUNNER = """\
import sys
from orchestrator import tls
tls.leaveOut()
from twisted.scripts.twistd import run
sys.argv = ["twistd", "-n", "--pidfile=", "-y", sys.argv[1]]
run()
"""

_TAC = """\
import os
from twisted.application import service
application = service.Application("floor")
STEP = {step}
READY = {ready!r}
if STEP >= 3:
    import yaml, pluggy, dotenv  # noqa: F401
if STEP >= 4:
    import prometheus_client  # noqa: F401
if STEP >= 2:
    from twisted.application import strports
    from twisted.web import resource, server
    strports.service("tcp:{port}:interface=127.0.0.1",
                     server.Site(resource.Resource())).setServiceParent(application)


class _Ready(service.Service):
    def startService(self):
        from twisted.internet import protocol, reactor
        if STEP >= 2:
            reactor.spawnProcess(protocol.ProcessProtocol(), "/bin/sleep", ["sleep", "3600"], env={{}})
        reactor.callLater(0.5, lambda: open(READY, "w").close())


_Ready().setServiceParent(application)
"""

STEPS = {1: "twistd, reactor, empty application (TLS left out)",
         2: "+ twisted.web Site on an endpoint, one child",
         3: "+ yaml, pluggy, dotenv",
         4: "+ prometheus_client"}


def floorSample(step: int, settle: float) -> int:
    directory = os.path.join(OUT, "footprint-floor", f"step-{step}")
    os.makedirs(directory, exist_ok=True)
    ready = os.path.join(directory, "ready")
    if os.path.exists(ready):
        os.unlink(ready)
    tac = os.path.join(directory, "floor.tac")
    with open(tac, "w") as f:
        f.write(_TAC.format(step=step, ready=ready, port=freePort()))
    runner = os.path.join(directory, "run.py")
    with open(runner, "w") as f:
        f.write(_RUNNER)
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = spawn([PYTHON, runner, tac], logPath=os.path.join(directory, "twistd.log"), cwd=directory,
                    env=env)
    try:
        waitFor(lambda: os.path.exists(ready) or process.poll() is not None, 60, 0.1, f"floor step {step}")
        if process.poll() is not None:
            raise RuntimeError(f"floor step {step} exited: see {directory}/twistd.log")
        time.sleep(settle)
        return procStatus(process.pid)["VmRSS"]
    finally:
        killTree(process, graceful=10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args(argv)
    compiled(ROOT)
    samples: dict = {label: [] for label in list(STEPS.values()) + ["the orchestrator, 1 child"]}
    for run in range(args.runs):
        for step, label in STEPS.items():
            samples[label].append(floorSample(step, args.settle))
            log(f"  run {run + 1}: {label}: {samples[label][-1] / MIB:.1f} MiB")
        rss = sample("now", 1, None, args.settle)["VmRSS"]
        samples["the orchestrator, 1 child"].append(rss)
        log(f"  run {run + 1}: the orchestrator, 1 child: {rss / MIB:.1f} MiB")
    rows = [[label, f"{statistics.median(values) / MIB:.1f} MiB",
             " ".join(f"{v / MIB:.1f}" for v in values)] for label, values in samples.items()]
    text = table(["process", "VmRSS (median)", "samples (MiB)"], rows)
    writeResult("footprint-floor", {"machine": machineInfo(), "args": vars(args), "samples": samples,
                                    "table": text})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
