#!/usr/bin/env python3
"""
Memory per process (issue 11): the orchestrator's resident memory with N
C{/bin/sleep} children (C{bench/scale.py}'s configuration), for this
checkout and, with C{--before REF}, the same at a git ref (exported with
C{git archive} into C{bench/out/footprint-REF} and run with C{PYTHONPATH} on
it), interleaved in one run.

Each sample: launch C{twistd -n orchestrator}, wait until
C{GET /api/v1/processes} says all N are running, wait C{--settle} seconds,
read C{VmRSS} (and its C{RssAnon}/C{RssFile} parts) and the number of
threads from C{/proc/PID/status}, stop it.  The table shows the median of
C{--runs} samples per size.  Both trees are byte-compiled first
(C{_common.compiled}): compiling ~100 modules at launch leaves ~2 MiB more
behind than an installed package, which pip compiles, ever has.

C{--trace} also runs this checkout under tracemalloc (C{bench/_traced.py},
which dumps a snapshot on SIGUSR2 to the path in its C{FOOTPRINT_SNAPSHOT}
environment variable; C{FOOTPRINT_FRAMES} sets the traceback depth) at the
smallest and the largest size, and prints the top C{--top} lines (file:line)
of the difference, with what each costs per process.

Usage: .venv/bin/python bench/footprint.py [--sizes 1,100,500] [--runs 3]
       [--before main] [--trace] [--frames 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (OUT, PYTHON, ROOT, compiled, freePort, httpGet, killTree, log, machineInfo,  # noqa: E402
                     percentile, projectBin, spawn, stopAll, table, waitFor, writeResult)
from scale import exportedTree, orchestratorYAML, programs  # noqa: E402

MIB = 1024 * 1024


def beforeTree(ref: str) -> tuple[str, str]:
    """
    The code at C{ref}, exported once into bench/out: C{(folder, commit)}.
    """
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", ref], capture_output=True,
                            text=True, check=True).stdout.strip()
    return exportedTree(commit, f"footprint-{commit}"), commit


def procStatus(pid: int) -> dict[str, int]:
    """
    C{VmRSS}, C{RssAnon}, C{RssFile} (bytes) and C{Threads} of C{pid}.
    """
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) * 1024
            elif key == "Threads":
                out[key] = int(value)
    return out


def allRunning(port: int, n: int) -> bool:
    status, body = httpGet(port, "/api/v1/processes", timeout=5)
    if status != 200:
        return False
    try:
        return sum(p["status"] == "running" for p in json.loads(body)["processes"]) == n
    except (ValueError, KeyError):
        return False


def sample(label: str, n: int, pythonpath: str | None, settle: float,
           snapshot: str | None = None, frames: int = 1) -> dict:
    """
    One orchestrator with C{n} sleep children: its memory once all run.
    """
    directory = os.path.join(OUT, "footprint", f"{label}-{n}")
    subprocess.run(["rm", "-rf", directory], check=True)
    os.makedirs(directory)
    port = freePort()
    path = os.path.join(directory, "orchestrator.yaml")
    with open(path, "w") as f:
        f.write(orchestratorYAML(directory, port, programs(n)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env["XDG_STATE_HOME"] = os.path.join(directory, "state")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = ["-n", "--pidfile=", "orchestrator", "--config", path, "--env-file", os.devnull]
    if snapshot:
        env["FOOTPRINT_SNAPSHOT"] = snapshot
        env["FOOTPRINT_FRAMES"] = str(frames)
        argv = [PYTHON, os.path.join(ROOT, "bench", "_traced.py")] + args
    else:
        argv = [projectBin("twistd")] + args
    process = spawn(argv, logPath=os.path.join(directory, "twistd.log"), cwd=directory, env=env)
    try:
        def ready():
            if process.poll() is not None:
                raise RuntimeError(f"{label} exited: see {directory}/twistd.log")
            return allRunning(port, n)

        waitFor(ready, 120 + n / 5, 0.2, f"{n} running children of {label}")
        time.sleep(settle)
        status = procStatus(process.pid)
        if snapshot:
            os.kill(process.pid, signal.SIGUSR2)
            waitFor(lambda: os.path.exists(snapshot), 120, 0.2, "the tracemalloc snapshot")
        return {"variant": label, "children": n, **status}
    finally:
        killTree(process, graceful=30)


def traceDiff(small: str, large: str, nSmall: int, nLarge: int, top: int, key: str) -> str:
    """
    The top lines of the allocations that grew from C{small} to C{large}.
    """
    old = tracemalloc.Snapshot.load(small)
    new = tracemalloc.Snapshot.load(large)
    stats = new.compare_to(old, key)
    per = nLarge - nSmall
    total = sum(s.size_diff for s in stats)
    rows = []
    for stat in stats[:top]:
        frame = stat.traceback[-1] if key == "traceback" else stat.traceback[0]
        where = f"{_short(frame.filename)}:{frame.lineno}"
        rows.append([where, f"{stat.size_diff / 1024:+.1f} KiB", f"{stat.size_diff / per:+.0f} B",
                     f"{stat.count_diff:+d}", _source(frame.filename, frame.lineno)])
    peaks = []
    for path in (small, large):
        with open(path + ".peak") as f:
            peaks.append(int(f.read().split()[1]) / MIB)
    head = (f"tracemalloc, {nSmall} -> {nLarge} children: {total / MIB:+.2f} MiB traced in all "
            f"({total / per:+.0f} B per process); {_traced(old) / MIB:.2f} MiB -> "
            f"{_traced(new) / MIB:.2f} MiB (peak {peaks[0]:.2f} -> {peaks[1]:.2f} MiB)")
    return head + "\n\n" + table(["where", "grew", "per process", "blocks", "line"], rows)


def _traced(snapshot) -> int:
    return sum(t.size for t in snapshot.traces)


def _short(filename: str) -> str:
    for marker in ("site-packages/", ROOT + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.replace(os.path.dirname(os.__file__) + "/", "")


def _source(filename: str, lineno: int) -> str:
    import linecache

    return "`" + linecache.getline(filename, lineno).strip()[:70].replace("|", "\\|") + "`"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,500")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--before", default=None, help="a git ref to compare with (e.g. main)")
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--trace-only", action="store_true", help="only the tracemalloc diff")
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--name", default="footprint")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    started = time.monotonic()
    variants = [("now", None)]
    data: dict = {"machine": machineInfo(), "args": vars(args)}
    compiled(ROOT)  # (as installed: no module compiled from source at launch)
    if args.before:
        tree, commit = beforeTree(args.before)
        compiled(tree)
        variants.insert(0, (f"before ({commit})", tree))
        data["before"] = commit
    samples = []
    text = ""
    try:
        if not args.trace_only:
            for run in range(args.runs):
                for n in sizes:
                    for label, tree in variants:
                        s = sample(label.split()[0], n, tree, args.settle)
                        s["variant"] = label
                        samples.append(s)
                        log(f"  run {run + 1}, {n} children, {label}: {s['VmRSS'] / MIB:.1f} MiB "
                            f"(anon {s['RssAnon'] / MIB:.1f}, file {s['RssFile'] / MIB:.1f}), "
                            f"{s['Threads']} threads")
            rows = []
            for label, _ in variants:
                for n in sizes:
                    mine = [s for s in samples if s["variant"] == label and s["children"] == n]
                    rss = percentile([s["VmRSS"] for s in mine], 50) / MIB
                    rows.append([label, n, f"{rss:.1f} MiB",
                                 f"{percentile([s['RssAnon'] for s in mine], 50) / MIB:.1f} MiB",
                                 f"{percentile([s['RssFile'] for s in mine], 50) / MIB:.1f} MiB",
                                 max(s["Threads"] for s in mine),
                                 " ".join(f"{s['VmRSS'] / MIB:.1f}" for s in mine)])
            text = table(["orchestrator", "children", "RSS (median)", "anon", "file", "threads",
                          "samples (MiB)"], rows)
        if args.trace or args.trace_only:
            paths = {}
            for n in (sizes[0], sizes[-1]):
                paths[n] = os.path.join(OUT, "footprint", f"trace-{n}.snapshot")
                if os.path.exists(paths[n]):
                    os.unlink(paths[n])
                sample("traced", n, None, args.settle, paths[n], args.frames)
            for key in ("lineno", "filename"):
                text += "\n\n" + traceDiff(paths[sizes[0]], paths[sizes[-1]], sizes[0], sizes[-1],
                                           args.top, key)
    finally:
        stopAll()
    with open("/proc/loadavg") as f:
        data["loadavg_end"] = f.read().split()[:3]
    data["samples"] = samples
    data["table"] = text
    data["elapsed_s"] = time.monotonic() - started
    writeResult(args.name, data)
    print(f"load average at start {' '.join(data['machine']['loadavg'])}, "
          f"at end {' '.join(data['loadavg_end'])}\n")
    print(text)
    log(f"footprint done in {data['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
