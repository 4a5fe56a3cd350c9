#!/usr/bin/env python3
"""
Respawn latency: C{kill -9} of the supervised demo backend -> (a) the new
child's pid exists, (b) the new child answers C{GET /health}.

Side by side in one run: orchestrator (default configuration except ports
and C{restart.reset_after}; and a tuned variant), supervisord and circus
(each tuned for its fastest restart).  Supervisord and circus are installed
into throwaway venvs (C{bench/.venv-supervisor}, C{bench/.venv-circus}) on
first use.

(a) is observed by listing C{/proc} in a tight loop (one round every
~0.2-0.3 ms) for a process whose parent is the supervisor and whose pid is
new; (b) by C{GET /health} on a fresh connection every millisecond until
it answers 200 with the new pid.  Before each kill the supervisor is in
steady state: the child is healthy, the supervisor says it is running (for
the orchestrator: running with its automatic-restart attempt counter back
at 0, so the kill is a first crash after a healthy run, which the backoff
policy restarts at once), plus C{--settle} seconds.

Where C{perf} can record system-wide tracepoints (root), the same kills
are also timed by the kernel (C{_ktrace.py}): kill -> the victim's SIGCHLD
(old child gone) -> the fork of the new pid -> its execs.  Those are exact;
the C{/proc} scanner's split is only as good as its CPU share.

Also runs C{bench/spawn_cost.py}: the orchestrator's spawn mechanisms
(posix_spawn behind the wrappers, the fork fallback) against Twisted's
plain C{reactor.spawnProcess}.

Usage: python bench/respawn.py [--samples 30] [--settle 0.5] [--only NAME,...] [--trace auto|on|off]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (DEMO, OUT, PYTHON, SystemCPU, childrenOf, fmt, freePort, healthPid, log,  # noqa: E402
                     machineInfo, projectBin, stopAll, summary, table, waitFor, waitNewChild,
                     writeResult)
from _supervisors import Circus, Minimal, Orchestrator, Supervisord, idleProfile  # noqa: E402
import _ktrace  # noqa: E402

#: The orchestrator's default configuration, except that the attempt
#: counter resets after 1 s of healthy running instead of 60 s: with 60 s,
#: kills spaced by a few seconds would be repeated failures (backoff delays,
#: then give-up after max_attempts=3), and 30 samples spaced by 60 s would
#: take half an hour.
DEFAULT_YAML = """\
restart: {reset_after: 1}
"""

#: Everything that runs between SIGCHLD and the fork kept to a minimum:
#: no probe (ready after 0.2 s), no notifiers, warnings and errors only in
#: the log, child output not echoed into the log.
FAST_YAML = """\
restart: {policy: always, reset_after: 0.5}
health: {probe: none}
start: {ready_after: 0.2}
log: {echo: false}
"""
FAST_TOP = """\
logging: {level: warn}
notifiers: []
"""


def supervisors(only: set[str] | None, circusDelay: float):
    chosen = [
        Orchestrator("orchestrator (default)", DEFAULT_YAML),
        Orchestrator("orchestrator (tuned)", FAST_YAML, FAST_TOP),
        "supervisord",
        "circus",
        Minimal(),
    ]
    for item in chosen:
        name = item if isinstance(item, str) else item.label
        if only and not any(o in name for o in only):
            continue
        if item == "supervisord":
            item = Supervisord()
        elif item == "circus":
            item = Circus(checkDelay=circusDelay)
        yield item


def measure(supervisor, directory: str, samples: int, settle: float, idle: float,
            trace: bool = False) -> dict:
    port = freePort()
    argv = [PYTHON, DEMO, "--port", str(port)]
    result = {"label": supervisor.label, "kind": supervisor.kind,
              "version": getattr(supervisor, "version", None)}
    if not getattr(supervisor, "available", True):
        result["error"] = f"not installed: {supervisor.note}"
        return result
    supervisor.start(directory, [("backend", argv, port)])
    try:
        pid = waitFor(lambda: healthPid(port), 60, 0.02, f"{supervisor.label}: first /health")
        waitFor(lambda: supervisor.steady("backend", pid), 30, 0.05, f"{supervisor.label}: steady")
        result.update(idleProfile(supervisor, idle))
        toPid, toHealth, toDead, reaction, failures, pairs = [], [], [], [], [], []
        tracer = _ktrace.Trace(os.path.join(directory, "perf.data")).start() if trace else None
        machine = SystemCPU().start()
        for i in range(samples):
            pid = waitFor(lambda: healthPid(port), 30, 0.02, "the backend's /health")
            waitFor(lambda: supervisor.steady("backend", pid), 30, 0.05, "steady state")
            time.sleep(settle)
            if supervisor.process.poll() is not None:
                raise RuntimeError(f"{supervisor.label} exited with {supervisor.process.returncode}")
            known = childrenOf(supervisor.pid) | {pid}
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            newPid, seen, dead = waitNewChild(supervisor.pid, known, timeout=10, old=pid)
            if newPid is None:
                failures.append(f"sample {i}: no new child within 10 s")
                continue
            pairs.append((pid, newPid))
            toPid.append(seen - t0)
            toDead.append(dead - t0)
            reaction.append(seen - dead)
            deadline = time.perf_counter() + 20
            while time.perf_counter() < deadline:
                if healthPid(port, timeout=0.5) == newPid:
                    toHealth.append(time.perf_counter() - t0)
                    break
                time.sleep(0.001)
            else:
                failures.append(f"sample {i}: new pid {newPid} never answered /health")
        result["machine_busy_percent"] = machine.stop()
        if tracer is not None:
            tracer.stop()
            kernel = tracer.respawns(pairs)
            os.unlink(tracer.path)
            lastExec = [k["execs"][-1][0] for k in kernel if k["execs"]]
            firstExec = [k["execs"][0][0] for k in kernel if k["execs"]]
            result["kernel"] = {
                "n": len(kernel),
                "kill_gone": summary([k["kill_gone"] for k in kernel]),
                "gone_new": summary([k["gone_new"] for k in kernel]),
                "kill_new": summary([k["kill_new"] for k in kernel]),
                "new_first_exec": summary(firstExec),
                "new_command_exec": summary(lastExec),
                "exec_chain": [name for _t, name in kernel[0]["execs"]] if kernel else [],
                "raw": kernel,
            }
        result.update(pid=summary(toPid), health=summary(toHealth), dead=summary(toDead),
                      reaction=summary(reaction), failures=failures,
                      raw_pid=toPid, raw_health=toHealth, raw_dead=toDead)
    finally:
        supervisor.stop()
    if supervisor.kind == "orchestrator":
        # Every kill must have been a first crash after a healthy run
        # (restarted at once), never a repeated failure (backoff delay).
        with open(os.path.join(directory, "twistd.log"), errors="replace") as f:
            attempts = re.findall(r"Auto-restart attempt (\d+)/", f.read())
        result["restart_attempt_numbers"] = sorted(set(attempts))
        if any(a != "1" for a in attempts):
            result.setdefault("failures", []).append(
                f"some kills were repeated failures (attempts {sorted(set(attempts))})")
    return result


def spawnCost(spawns: int) -> dict:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spawn_cost.py")
    out = subprocess.run([projectBin("python"), script, "--spawns", str(spawns), "--json"],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout)


def report(results: list[dict], cost: dict | None) -> str:
    base = next((r for r in results if r.get("label") == "orchestrator (default)" and "pid" in r), None)
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["label"], r.get("version") or "", "error: " + r["error"]] + [""] * 9)
            continue
        p, h, d, x = r["pid"], r["health"], r.get("dead", {}), r.get("reaction", {})
        ratio = ""
        if base and p.get("median") and base["pid"].get("median"):
            ratio = f"{p['median'] / base['pid']['median']:.2f}x"
        rows.append([r["label"], r.get("version") or "", fmt(p.get("median"), digits=2),
                     fmt(p.get("p95"), digits=2), ratio,
                     fmt(d.get("median"), digits=2), fmt(x.get("median"), digits=2),
                     fmt(h.get("median")), fmt(h.get("p95")),
                     f"{p.get('n', 0)}/{h.get('n', 0)}",
                     f"{r.get('idle_cpu_percent', 0):.1f}% / {r.get('rss_mb') or 0:.0f} MB",
                     f"{r.get('machine_busy_percent', 0):.0f}%"])
    text = table(["supervisor", "version", "kill -> new pid median", "new pid p95",
                  "ratio (median) vs orchestrator default", "kill -> old child dead median",
                  "dead -> new pid median", "kill -> /health median", "/health p95",
                  "samples pid/health", "idle CPU / RSS", "machine busy during samples"], rows)
    traced = [r for r in results if r.get("kernel", {}).get("n")]
    if traced:
        krows = []
        for r in traced:
            k = r["kernel"]
            krows.append([r["label"], fmt(k["kill_new"].get("median"), digits=2),
                          fmt(k["kill_new"].get("p95"), digits=2),
                          fmt(k["kill_gone"].get("median"), digits=2),
                          fmt(k["gone_new"].get("median"), digits=2),
                          fmt(k["gone_new"].get("p95"), digits=2),
                          fmt(k["new_command_exec"].get("median"), digits=2),
                          " > ".join(os.path.basename(e) for e in k["exec_chain"]), k["n"]])
        text += "\n\nKernel timestamps of the same kills (perf tracepoints):\n\n" + table(
            ["supervisor", "kill -> new pid (fork) median", "p95", "kill -> old child gone (SIGCHLD) median",
             "gone -> new pid median", "gone -> new pid p95", "new pid -> command exec'd median",
             "exec chain", "n"], krows)
    for r in results:
        for failure in r.get("failures", []):
            text += f"\n- {r['label']}: {failure}"
    if cost and "error" not in cost:
        text += "\n\n" + cost.get("table", "")
    elif cost:
        text += "\n\nspawn_cost.py failed:\n" + cost["error"]
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--settle", type=float, default=0.5,
                        help="seconds in steady state before each kill")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measurement")
    parser.add_argument("--circus-check-delay", type=float, default=0.01)
    parser.add_argument("--spawns", type=int, default=200, help="spawns per mechanism in spawn_cost")
    parser.add_argument("--only", default="", help="comma-separated label substrings")
    parser.add_argument("--trace", choices=["auto", "on", "off"], default="auto",
                        help="also time each kill with kernel tracepoints (perf; root)")
    args = parser.parse_args(argv)
    trace = False
    if args.trace != "off":
        why = _ktrace.available()
        trace = why is None
        if args.trace == "on" and not trace:
            parser.error(f"--trace on: {why}")
        log(f"respawn: kernel tracing {'on' if trace else 'off (' + why + ')'}")
    only = {o for o in args.only.split(",") if o}
    started = time.monotonic()
    info = machineInfo()
    results = []
    try:
        for supervisor in supervisors(only, args.circus_check_delay):
            slug = re.sub(r"[^a-z0-9]+", "-", supervisor.label.lower()).strip("-")
            directory = os.path.join(OUT, "respawn", slug)
            shutil.rmtree(directory, ignore_errors=True)
            log(f"respawn: {supervisor.label}, {args.samples} samples")
            try:
                results.append(measure(supervisor, directory, args.samples, args.settle, args.idle,
                                       trace))
            except Exception as e:  # keep going with the other supervisors
                log(f"respawn: {supervisor.label} failed: {e!r}")
                results.append({"label": supervisor.label, "error": repr(e)})
            r = results[-1]
            if "pid" in r:
                log(f"  new pid median {fmt(r['pid'].get('median'), digits=2)}, "
                    f"/health median {fmt(r['health'].get('median'))}"
                    + (f"; kernel: kill -> new pid {fmt(r['kernel']['kill_new'].get('median'), digits=2)}"
                       if r.get("kernel", {}).get("n") else ""))
        cost = None
        if args.spawns > 0 and (not only or "spawn" in only):
            log(f"spawn cost: {args.spawns} spawns per mechanism")
            cost = spawnCost(args.spawns)
    finally:
        stopAll()
    text = report(results, cost)
    writeResult("respawn", {"machine": info, "args": vars(args), "results": results,
                            "spawn_cost": cost, "elapsed_s": time.monotonic() - started,
                            "table": text})
    print(text)
    log(f"respawn done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
