#!/usr/bin/env python3
"""
Start-up (issue 11): C{twistd} launch -> every one of N children exec'd,
for this checkout's orchestrator, the same at a reference tree (default:
the C{main} branch, exported with C{git archive} into C{bench/out/} and
run with C{PYTHONPATH} on it) and Twisted's procmon (a C{.tac} with one
C{ProcessMonitor}), each supervising C{/bin/sleep} children.

The tools take turns (the order rotates each round), one at a time, for
C{--rounds} rounds; the table gives the median and the best of each, with
the timeline read from C{/proc} (polled every millisecond): when the
first child had exec'd C{sleep}, when all had, and for the orchestrator
when its admin API first answered; and the supervisor's own CPU time and
run-queue wait until all had exec'd (C{/proc/PID/task/*/schedstat}): on
a shared machine, the wall time minus that wait is the steadier figure.
Both trees are byte-compiled first, as an installed package is.  The
machine's load average is printed: compare only figures of one run.

Usage: .venv/bin/python bench/startup.py [--children 100] [--rounds 7] [--ref main]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (OUT, ROOT, compiled, httpGet, log, machineInfo, stopAll,  # noqa: E402
                     table, writeResult)
from scale import Tool, execdChildren, exportedTree, programs  # noqa: E402


def referenceTree(ref: str) -> str:
    """
    The code at C{ref}, exported into bench/out under its commit (a
    branch moves).
    """
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", ref], capture_output=True,
                            text=True, check=True).stdout.strip()
    return exportedTree(commit, f"ref-{commit}")


def schedstat(pid: int) -> tuple[float, float]:
    """
    Seconds a process's threads ran on a CPU and waited on a run queue
    (C{/proc/PID/task/*/schedstat}): on a busy machine the wait is what
    other processes took, so the wall time minus it is what this start
    would have taken alone (the spawned children run on their own
    accounts).
    """
    ran = waited = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                fields = f.read().split()
            ran, waited = ran + int(fields[0]), waited + int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    return ran / 1e9, waited / 1e9


def measure(kind: str, label: str, directory: str, n: int, pythonpath: str | None) -> dict:
    tool = Tool(label, kind, pythonpath)
    t0 = time.monotonic()
    tool.launch(directory, programs(n))
    process, port = tool.process, tool.adminPort
    first = allExecd = api = cpu = waited = None
    deadline = t0 + 60
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{label} exited: see {directory}/out.log")
            now = time.monotonic()
            if allExecd is None:
                count = execdChildren(process.pid)
                if count and first is None:
                    first = now - t0
                if count >= n:
                    allExecd = now - t0
                    cpu, waited = schedstat(process.pid)
            if port is not None and api is None and allExecd is not None:
                # Asked only once every child runs: a request served
                # meanwhile would take reactor time from the spawns.
                if httpGet(port, "/api/v1/processes/p0000", timeout=0.5)[0] == 200:
                    api = time.monotonic() - t0
            if allExecd is not None and (port is None or api is not None):
                break
            time.sleep(0.001)
    finally:
        tool.stop()
    return {"tool": label, "first_s": first, "all_s": allExecd, "api_s": api, "cpu_s": cpu,
            "runqueue_s": waited, "alone_s": allExecd - waited if allExecd is not None else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ref", default="main", help="the reference tree's git revision")
    args = parser.parse_args(argv)
    reference = referenceTree(args.ref)
    for tree in (ROOT, reference):
        compiled(tree)
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    subjects = [("orchestrator", f"orchestrator (this checkout, {head})", None),
                ("orchestrator", f"orchestrator ({args.ref} = {os.path.basename(reference)[4:]})",
                 reference),
                ("procmon", "Twisted procmon", None)]
    data = {"machine": machineInfo(), "args": vars(args), "runs": []}
    try:
        for r in range(args.rounds):
            for i in range(len(subjects)):
                kind, label, pythonpath = subjects[(i + r) % len(subjects)]
                directory = os.path.join(OUT, "startup", f"{kind}-{'ref' if pythonpath else 'now'}")
                run = measure(kind, label, directory, args.children, pythonpath)
                data["runs"].append(run)
                log(f"  round {r + 1}: {label}: first {run['first_s']:.3f} s, all {run['all_s']:.3f} s "
                    f"(CPU {run['cpu_s']:.3f} s, run-queue wait {run['runqueue_s']:.3f} s)"
                    + (f", API {run['api_s']:.3f} s" if run["api_s"] else ""))
                time.sleep(0.5)
    finally:
        stopAll()
    with open("/proc/loadavg") as f:
        data["loadavg_after"] = f.read().split()[:3]
    rows = []
    procmon = statistics.median(r["all_s"] for r in data["runs"] if r["tool"] == subjects[2][1])
    procmonRuns = [r for r in data["runs"] if r["tool"] == subjects[2][1]]
    procmonAlone = statistics.median(r["alone_s"] for r in procmonRuns)
    for _, label, _ in subjects:
        runs = [r for r in data["runs"] if r["tool"] == label]

        def med(key):
            values = [r[key] for r in runs if r[key] is not None]
            return f"{statistics.median(values):.3f} s" if values else "-"

        allMedian = statistics.median(r["all_s"] for r in runs)
        aloneMedian = statistics.median(r["alone_s"] for r in runs)
        # Each round's figure against procmon's in the same round: the
        # load of a shared machine drifts slower than a round lasts.
        paired = statistics.median(r["all_s"] / p["all_s"] for r, p in zip(runs, procmonRuns))
        rows.append([label, med("first_s"), med("all_s"), f"{min(r['all_s'] for r in runs):.3f} s",
                     med("api_s"), med("cpu_s"), med("alone_s"), f"{allMedian / procmon:.2f}x",
                     f"{aloneMedian / procmonAlone:.2f}x", f"{paired:.2f}x"])
    text = table([f"{args.children} children, {args.rounds} rounds", "first exec'd (median)",
                  "all exec'd (median)", "all exec'd (best)", "API answers, asked from then on (median)",
                  "its CPU until all exec'd (median)", "all exec'd minus its run-queue wait (median)",
                  "all exec'd vs procmon", "minus run-queue wait vs procmon",
                  "vs procmon in the same round (median)"], rows)
    text += (f"\n\nload average before {' '.join(data['machine']['loadavg'])}, "
             f"after {' '.join(data['loadavg_after'])} ({data['machine']['nproc']} cores)")
    data["table"] = text
    writeResult("startup", data)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
