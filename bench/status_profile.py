#!/usr/bin/env python3
"""
Not part of C{run_all.py}: where the time of one status answer goes in the
orchestrator under the load of C{bench/scale.py --only status}, with 100
sleep children HTTP-probed every second.

The real C{twistd} runs under cProfile (C{twistd --profile --savestats});
1 connection, then 2x4 connections of C{GET /api/v1/processes/p0000} (the
closed loop of C{bench/api.py}) for C{--duration} seconds each; then the
statistics, per answer: the cumulative CPU of each stage of the request
path, and the functions with the most own time among those called at least
once per answer.  A second, unprofiled server is measured the same way
with every pass of Python's cyclic garbage collector timed
(C{bench/_gctimer/sitecustomize.py} on its C{PYTHONPATH}): the longest
passes during the load and the share of the time the reactor spent in
them, which cProfile does not show; its CPU split into user and kernel
time (C{/proc/PID/stat}); and a third server whose start-up objects are
frozen (C{gc.freeze()} from a timer thread once all children run), to show
what that does to the full collections (since C{orchestrator/heap.py} the
orchestrator freezes its own start-up heap before the first spawn, so this
third server only freezes, again, what its first seconds built).  Everything listens on
127.0.0.1; every wait has a deadline.

Usage: .venv/bin/python bench/status_profile.py [--duration 10] [--children 100]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (BENCH, CLK_TCK, OUT, CPUMeter, killTree, log, machineInfo, procStat, table,  # noqa: E402
                     writeResult)
from api import load  # noqa: E402
from scale import STATUS_TARGETS, Tool, probedPrograms, startTargets, waitAllRunning  # noqa: E402

PATH = "/api/v1/processes/p0000"
SHAPES = (("1 connection", 1, 1), ("2x4 connections", 2, 4))

# The request path, outermost first: (label, file suffix, function name).
STAGES = [
    ("reactor: read a request (HTTPChannel.dataReceived)", "orchestrator/web/channel.py", "dataReceived"),
    ("Request.process: headers, traversal, render", "twisted/web/server.py", "process"),
    ("  Guard: Host/Origin/token checks and traversal", "orchestrator/web/security.py", "getChildWithDefault"),
    ("  ApiResource.render (a ready answer written at once)", "orchestrator/web/_render.py", "render"),
    ("    the cached status (StatusCache.encoded)", "orchestrator/web/views.py", "encoded"),
    ("    writeJSON: headers, write, finish", "orchestrator/web/_render.py", "writeJSON"),
    ("      Request.write (status line and headers)", "twisted/web/http.py", "write"),
    ("      Request.finish", "twisted/web/server.py", "finish"),
    ("reactor: send (FileDescriptor.doWrite)", "twisted/internet/abstract.py", "doWrite"),
    ("probes, amortised per answer: send a check", "orchestrator/health/monitor.py", "_checkNow"),
    ("probes, amortised per answer: handle its result", "orchestrator/health/monitor.py", "_handle"),
]


def _find(stats: pstats.Stats, fileSuffix: str, name: str):
    found = [(key, value) for key, value in stats.stats.items()
             if key[0].endswith(fileSuffix) and key[2] == name]
    # The busiest match (a file may define several functions of one name).
    return max(found, key=lambda item: item[1][3], default=(None, None))


def analyse(path: str, answers: int) -> dict:
    """
    Per answer: the stages' cumulative time and calls, and the top own
    times among functions called at least once per answer.
    """
    stats = pstats.Stats(path)
    stages = []
    for label, fileSuffix, name in STAGES:
        key, value = _find(stats, fileSuffix, name)
        if key is None:
            stages.append({"stage": label, "calls": 0, "cumulative_us": None})
            continue
        _cc, calls, _tt, cumulative, _callers = value
        stages.append({"stage": label, "function": f"{os.path.basename(key[0])}:{key[1]} {name}",
                       "calls_per_answer": calls / answers, "cumulative_us": cumulative / answers * 1e6})
    hot = []
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():
        if calls >= answers:
            hot.append({"function": f"{_short(filename)}:{line} {name}", "calls_per_answer": calls / answers,
                        "own_us": own / answers * 1e6, "cumulative_us": cumulative / answers * 1e6})
    hot.sort(key=lambda h: -h["own_us"])
    return {"stages": stages, "hot": hot[:25], "total_s": stats.total_tt}


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/orchestrator/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1] if marker != "/orchestrator/" else (
                "orchestrator/" + filename.split(marker, 1)[1])
    return filename


def serve(directory: str, ports, n: int, duration: float, twistdOptions=(), env: dict | None = None) -> dict:
    """
    One orchestrator with C{n} probed children under both load shapes;
    stopped gracefully (SIGTERM) at the end so twistd writes its profile
    and atexit hooks run.
    """
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    tool = Tool("orchestrator", "orchestrator", pythonpath=(env or {}).get("PYTHONPATH"),
                twistdOptions=twistdOptions)
    try:
        tool.launch(directory, probedPrograms(n, ports))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    runs = {}
    try:
        waitAllRunning(tool, n, 120)
        time.sleep(3)
        for shape, workers, connections in SHAPES:
            meter = CPUMeter(tool.pid).start()
            times0 = _userSystem(tool.pid)
            began = time.monotonic()
            run = load(tool.adminPort, "GET", PATH, b"", {}, workers, connections, 0.5, duration)
            run["window"] = (began + 0.6, time.monotonic())
            run["server_cpu_percent"] = meter.stop()
            times1 = _userSystem(tool.pid)
            answers = run["rps"] * (duration + 0.5)  # the warm-up's answers too
            run["user_us_per_answer"] = (times1[0] - times0[0]) / answers * 1e6
            run["system_us_per_answer"] = (times1[1] - times0[1]) / answers * 1e6
            runs[shape] = run
            log(f"  {shape}: {run['rps']:.0f}/s p50 {run['latency']['median'] * 1e3:.2f} ms "
                f"p99 {run['latency']['p99'] * 1e3:.2f} ms, server CPU {run['server_cpu_percent']:.0f}%")
    finally:
        tool.stop()
    return runs


def _userSystem(pid: int) -> tuple[float, float]:
    fields = procStat(pid)
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def gcDuring(passes: list, window: tuple[float, float]) -> dict:
    began, ended = window
    inside = [p for p in passes if began <= p[0] <= ended]
    byGeneration = {}
    for generation in (0, 1, 2):
        mine = [p[2] for p in inside if p[1] == generation]
        byGeneration[generation] = {"passes": len(mine), "max_ms": max(mine, default=0) * 1e3,
                                    "total_ms": sum(mine) * 1e3}
    return {"seconds": ended - began, "generations": byGeneration,
            "share_percent": 100 * sum(p[2] for p in inside) / (ended - began)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--children", type=int, default=100)
    args = parser.parse_args(argv)
    base = os.path.join(OUT, "status-profile")
    os.makedirs(base, exist_ok=True)
    profilePath = os.path.join(base, "twistd.pstats")
    gcPath = os.path.join(base, "gc.json")
    frozenPath = os.path.join(base, "gc-frozen.json")
    for stale in (profilePath, gcPath, frozenPath):
        if os.path.exists(stale):
            os.remove(stale)
    data = {"machine": machineInfo(), "args": vars(args)}
    backends: list = []
    try:
        backends, ports = startTargets(STATUS_TARGETS)
        log("status profile: cProfile'd orchestrator")
        profiled = serve(os.path.join(base, "profiled"), ports, args.children, args.duration,
                         ["--profile", profilePath, "--profiler", "cprofile", "--savestats"])
        log("status profile: garbage collector passes (no profiler)")
        timed = serve(os.path.join(base, "gc"), ports, args.children, args.duration,
                      env={"PYTHONPATH": os.path.join(BENCH, "_gctimer"), "BENCH_GC_PAUSES": gcPath})
        log("status profile: the same with gc.freeze() after start-up")
        frozen = serve(os.path.join(base, "gc-frozen"), ports, args.children, args.duration,
                       env={"PYTHONPATH": os.path.join(BENCH, "_gctimer"), "BENCH_GC_PAUSES": frozenPath,
                            "BENCH_GC_FREEZE_AFTER": "4"})
    finally:
        for backend in backends:
            killTree(backend)
    # Answers in the measured windows, plus the warm-ups' at the same rate.
    answers = sum(r["requests"] for r in profiled.values())
    warm = sum(r["rps"] * 0.5 for r in profiled.values())
    data["profile"] = analyse(profilePath, int(answers + warm))
    data["gc"] = {}
    for label, path, runs in (("as it is", gcPath, timed), ("gc.freeze() after start-up", frozenPath, frozen)):
        with open(path) as f:
            passes = json.load(f)
        data["gc"].update({f"{label}, {shape}": gcDuring(passes["passes"], run["window"])
                           for shape, run in runs.items()})
        data.setdefault("gc_tracked_at_exit", {})[label] = passes["tracked"]
    data["loads"] = {f"{label}: {shape}": {k: run.get(k) for k in (
                        "rps", "latency", "server_cpu_percent", "user_us_per_answer", "system_us_per_answer")}
                     for label, runs in (("profiled", profiled), ("unprofiled", timed),
                                         ("unprofiled, gc.freeze()", frozen))
                     for shape, run in runs.items()}
    parts = [table(["server: load", "req/s", "p50", "p99", "max", "server CPU", "user / kernel CPU per answer"],
                   [[k, f"{v['rps']:.0f}", f"{v['latency']['median'] * 1e3:.2f} ms",
                     f"{v['latency']['p99'] * 1e3:.2f} ms", f"{v['latency']['max'] * 1e3:.2f} ms",
                     f"{v['server_cpu_percent']:.0f}%",
                     f"{v['user_us_per_answer']:.0f} / {v['system_us_per_answer']:.0f} µs"]
                    for k, v in data["loads"].items()]),
             table(["stage (cProfile, per answer)", "function", "calls per answer", "cumulative"],
                   [[s["stage"], s.get("function", "-"), f"{s.get('calls_per_answer', 0):.2f}",
                     "-" if s["cumulative_us"] is None else f"{s['cumulative_us']:.0f} µs"]
                    for s in data["profile"]["stages"]]),
             table(["function (called ≥ once per answer)", "calls per answer", "own time per answer",
                    "cumulative"],
                   [[h["function"], f"{h['calls_per_answer']:.2f}", f"{h['own_us']:.1f} µs",
                     f"{h['cumulative_us']:.0f} µs"] for h in data["profile"]["hot"]]),
             table(["unprofiled server, load", "gen 0 passes / max", "gen 1 passes / max",
                    "gen 2 passes / max", "time in the collector"],
                   [[shape] + [f"{g['generations'][i]['passes']} / {g['generations'][i]['max_ms']:.2f} ms"
                               for i in (0, 1, 2)] + [f"{g['share_percent']:.2f}%"]
                    for shape, g in data["gc"].items()])
             + f"\n\nobjects the collector tracks, at exit: {data['gc_tracked_at_exit']}"]
    text = "\n\n".join(parts)
    data["table"] = text
    writeResult("status-profile", data)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
