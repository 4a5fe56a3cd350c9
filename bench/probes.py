#!/usr/bin/env python3
"""
Probe capacity and unhealthy-to-restart latency of the orchestrator.

1. Capacity: one orchestrator in monitor-only mode (C{orchestrator.enabled:
   false}) with N processes, each with an HTTP probe every 1 s against one
   tiny asyncio keep-alive backend (C{bench/_tinybackend.py}, so the
   backend is not the bottleneck).  For each N, over a measuring window:
   the orchestrator's CPU% (utime+stime deltas from /proc), the backend's,
   the achieved probe rate counted by the backend (exact: at 1000 processes
   a C{/metrics} scrape takes seconds, which blurs a rate computed from
   two scrapes) against the expected N per second, and the rate from
   C{/metrics} (C{orchestrator_health_checks_total}) too, how the probes
   spread over each second (per 10 ms slot, at the backend), failures,
   probe latency from the duration histogram, and how long one
   C{/metrics} scrape takes.

2. Unhealthy -> restart: a managed demo backend probed every C{interval}
   with C{timeout} and C{failure_threshold}; the bench switches its health
   to C{fail} (503) or C{hang} (no answer) and times the switch -> the old
   child is dead -> a new pid answers C{/health}, against the expected
   window: the first failing probe comes U(0, interval) after the switch,
   then threshold-1 more intervals, plus the timeout for a hang, i.e.
   [(threshold-1)*interval, threshold*interval] (+ timeout).

Usage: python bench/probes.py [--levels 50,200,500,1000] [--window 20] [--samples 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (DEMO, OUT, PYTHON, TINY, CPUMeter, SystemCPU, fmt, freePort, healthPid, httpGet,  # noqa: E402
                     killTree, log, machineInfo, metricSum, metricsSamples, processGone, rssMB,
                     spawn, startOrchestrator, stopAll, summary, table, waitFor, waitListening,
                     writeResult)

_LE = re.compile(r'le="([^"]+)"')
_FINE_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


def _bucketQuantile(before: dict, after: dict, q: float) -> float | None:
    """
    Upper bound (the bucket's le) of the q-quantile of the probe durations
    observed between two scrapes, all processes together.
    """
    counts: dict[float, float] = {}
    for samples, sign in ((after, 1), (before, -1)):
        for key, value in samples.items():
            if key.startswith("orchestrator_health_check_duration_seconds_bucket"):
                le = float(_LE.search(key).group(1))
                counts[le] = counts.get(le, 0.0) + sign * value
    if not counts:
        return None
    total = counts.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(counts):
        if counts[le] >= q * total:
            return le
    return None


def capacityLevel(n: int, backendPort: int, backendPid: int, window: float, warmup: float,
                  interval: float, pythonpath: str | None = None) -> dict:
    directory = os.path.join(OUT, "probes", f"capacity-{n}")
    shutil.rmtree(directory, ignore_errors=True)
    adminPort = freePort()
    lines = [
        "orchestrator:",
        "  enabled: false",
        f'  state_dir: "{directory}/state"',
        "admin:",
        f'  listen: "tcp:{adminPort}:interface=127.0.0.1"',
        "processes:",
    ]
    for i in range(n):
        lines.append(f"  p{i:04d}:")
        lines.append(f'    url: "http://127.0.0.1:{backendPort}"')
        lines.append(f"    health: {{probe: http, interval: {interval}}}")
    # admin.default_process must name a configured process.
    lines.insert(lines.index("processes:"), "  default_process: p0000")
    # Finer latency buckets than the default, for a meaningful p99.
    lines.insert(lines.index("processes:"), "metrics:\n  health_buckets: [" + ", ".join(
        str(b) for b in _FINE_BUCKETS) + "]")
    process = startOrchestrator(directory, "\n".join(lines) + "\n", adminPort, timeout=120,
                                env={"PYTHONPATH": pythonpath} if pythonpath else None)
    try:
        time.sleep(warmup)
        scrapeStart = time.monotonic()
        before = metricsSamples(adminPort, timeout=30)
        scrape1 = time.monotonic() - scrapeStart
        t0 = time.monotonic()
        httpGet(backendPort, "/__window/start", timeout=5)
        orch = CPUMeter(process.pid).start()
        backend = CPUMeter(backendPid).start()
        machine = SystemCPU().start()
        time.sleep(window)
        machineBusy = machine.stop()
        orchCPU = orch.stop()
        backendCPU = backend.stop()
        status, body = httpGet(backendPort, "/__window/stop", timeout=5)
        seen = json.loads(body) if status == 200 else {}
        t1 = time.monotonic()
        after = metricsSamples(adminPort, timeout=30)
        scrape2 = time.monotonic() - t1
        elapsed = (t1 + scrape2 / 2) - (t0 - scrape1 / 2)
        checks = metricSum(after, "orchestrator_health_checks_total") - metricSum(
            before, "orchestrator_health_checks_total")
        failures = metricSum(after, "orchestrator_health_checks_total", 'result="failure"') - metricSum(
            before, "orchestrator_health_checks_total", 'result="failure"')
        metricsRate = checks / elapsed
        rate = seen["requests"] / seen["seconds"] if seen.get("seconds") else metricsRate
        expected = n / interval
        running = sum(1 for k, v in after.items()
                      if k.startswith("orchestrator_process_state") and 'state="running"' in k and v == 1.0)
        return {"processes": n, "orch_cpu_percent": orchCPU, "backend_cpu_percent": backendCPU,
                "cpu_ms_per_probe": orchCPU * 10 / rate if rate else None,
                "rss_mb": rssMB(process.pid), "checks_per_s": rate, "expected_per_s": expected,
                "metrics_checks_per_s": metricsRate, "backend_window": seen,
                "schedule_ratio": rate / expected, "failures": failures, "running": running,
                "latency_p50_le": _bucketQuantile(before, after, 0.5),
                "latency_p99_le": _bucketQuantile(before, after, 0.99),
                "scrape_s": max(scrape1, scrape2), "window_s": elapsed,
                "machine_busy_percent": machineBusy}
    finally:
        killTree(process, graceful=30)


UNHEALTHY_YAML = """\
processes:
  backend:
    command: ["{python}", "{demo}", "--port", "{port}"]
    url: "http://127.0.0.1:{port}"
    restart: {{reset_after: 1}}
    health: {{interval: {interval}, timeout: {timeout}, failure_threshold: {threshold}}}
"""


def unhealthy(samples: int, interval: float, timeout: float, threshold: int) -> dict:
    directory = os.path.join(OUT, "probes", "unhealthy")
    shutil.rmtree(directory, ignore_errors=True)
    adminPort, port = freePort(), freePort()
    yaml = (f'admin:\n  listen: "tcp:{adminPort}:interface=127.0.0.1"\n'
            f'orchestrator:\n  state_dir: "{directory}/state"\n'
            + UNHEALTHY_YAML.format(python=PYTHON, demo=DEMO, port=port, interval=interval,
                                    timeout=timeout, threshold=threshold))
    process = startOrchestrator(directory, yaml, adminPort)

    def steady():
        try:
            m = metricsSamples(adminPort)
        except (OSError, RuntimeError):
            return False
        return (m.get('orchestrator_process_state{process="backend",state="running"}') == 1.0
                and m.get('orchestrator_process_restart_attempts{process="backend"}') == 0.0)

    results = {}
    try:
        for mode in ("fail", "hang"):
            toDead, toHealth, errors = [], [], []
            for i in range(samples):
                old = waitFor(lambda: healthPid(port), 30, 0.02, "backend /health")
                waitFor(steady, 30, 0.05, "running with attempts reset")
                time.sleep(0.3 + (i % 5) * 0.17)  # spread the switch over the probe phase
                t0 = time.monotonic()
                status, _ = httpGet(port, f"/health/{mode}", method="POST", timeout=2)
                if status != 200:
                    errors.append(f"POST /health/{mode} answered {status}")
                    continue
                dead = None
                deadline = t0 + interval * threshold + timeout + 20
                newPid = None
                while time.monotonic() < deadline:
                    if dead is None:
                        if processGone(old):
                            dead = time.monotonic()
                    else:
                        newPid = healthPid(port, timeout=0.5)
                        if newPid is not None and newPid != old:
                            break
                    time.sleep(0.002)
                else:
                    errors.append(f"{mode} sample {i}: no restart within the deadline")
                    continue
                toDead.append(dead - t0)
                toHealth.append(time.monotonic() - t0)
            extra = timeout if mode == "hang" else 0.0
            results[mode] = {"dead": summary(toDead), "health": summary(toHealth),
                             "expected_min": (threshold - 1) * interval + extra,
                             "expected_max": threshold * interval + extra,
                             "raw_dead": toDead, "errors": errors}
    finally:
        killTree(process, graceful=30)
    return {"interval": interval, "timeout": timeout, "threshold": threshold, "modes": results}


def report(levels: list[dict], unhealthyResult: dict | None) -> str:
    rows = []
    for r in levels:
        if "error" in r:
            rows.append([r["processes"], "error: " + r["error"]] + [""] * 12)
            continue
        w = r.get("backend_window") or {}
        spread = (f"{w['per_slot_mean']:.1f} / {w['per_slot_p99']} / {w['per_slot_max']}"
                  if "per_slot_mean" in w else "n/a")
        rows.append([r["processes"], f"{r['orch_cpu_percent']:.1f}%",
                     fmt(r.get("cpu_ms_per_probe"), " ms", 3), f"{r['rss_mb']:.0f} MB",
                     f"{r['checks_per_s']:.1f} / {r['expected_per_s']:.0f}",
                     f"{r['schedule_ratio'] * 100:.1f}%",
                     f"{r.get('metrics_checks_per_s', r['checks_per_s']):.1f}", spread,
                     f"{r['failures']:.0f}",
                     f"<= {fmt(r['latency_p50_le'], digits=1)} / <= {fmt(r['latency_p99_le'], digits=1)}",
                     f"{r['backend_cpu_percent']:.1f}%", f"{r['scrape_s'] * 1000:.0f} ms",
                     f"{r['machine_busy_percent']:.0f}%"])
    text = table(["processes probed (1 s interval)", "orchestrator CPU", "CPU per probe", "orchestrator RSS",
                  "checks/s achieved (backend count) / expected", "schedule kept",
                  "checks/s from /metrics", "probes per 10 ms: mean / p99 / max", "failed checks",
                  "probe latency p50 / p99 (bucket)", "backend CPU", "one /metrics scrape",
                  "machine busy (2 cores = 100%)"], rows)
    if unhealthyResult:
        u = unhealthyResult
        rows = []
        for mode, r in u["modes"].items():
            d, h = r["dead"], r["health"]
            rows.append([mode, f"{r['expected_min']:.2f} - {r['expected_max']:.2f} s",
                         fmt(d.get("median"), "s", 2) if d.get("n") else "n/a",
                         f"{fmt(d.get('min'), 's', 2)} / {fmt(d.get('max'), 's', 2)}" if d.get("n") else "n/a",
                         fmt(h.get("median"), "s", 2) if h.get("n") else "n/a",
                         fmt(h.get("max"), "s", 2) if h.get("n") else "n/a",
                         d.get("n", 0)])
        text += (f"\n\nUnhealthy -> restart (interval {u['interval']} s, timeout {u['timeout']} s, "
                 f"failure_threshold {u['threshold']}):\n\n")
        text += table(["health mode", "expected switch -> kill", "switch -> old child dead median",
                       "min / max", "switch -> new pid serving /health median", "max", "samples"], rows)
        for mode, r in u["modes"].items():
            for e in r["errors"]:
                text += f"\n- {mode}: {e}"
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="50,200,500,1000")
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=5, help="unhealthy samples per mode")
    parser.add_argument("--unhealthy-interval", type=float, default=1.0)
    parser.add_argument("--unhealthy-timeout", type=float, default=0.5)
    parser.add_argument("--threshold", type=int, default=3)
    parser.add_argument("--pythonpath", default=None,
                        help="run twistd on another checkout of the code (before/after)")
    parser.add_argument("--name", default="probes", help="bench/out/NAME.json")
    args = parser.parse_args(argv)
    started = time.monotonic()
    info = machineInfo()
    levels, unhealthyResult = [], None
    try:
        backendPort = freePort()
        backend = spawn([PYTHON, TINY, backendPort], logPath=os.path.join(OUT, "probes", "tiny.log"))
        waitListening(backendPort, 10, backend, "tiny backend")
        for n in [int(x) for x in args.levels.split(",") if x]:
            log(f"probes: capacity with {n} processes ({args.window:.0f} s window)")
            try:
                levels.append(capacityLevel(n, backendPort, backend.pid, args.window, args.warmup,
                                            args.interval, args.pythonpath))
                r = levels[-1]
                log(f"  CPU {r['orch_cpu_percent']:.1f}%, {r['checks_per_s']:.1f}/{r['expected_per_s']:.0f} checks/s")
            except Exception as e:
                log(f"  failed: {e!r}")
                levels.append({"processes": n, "error": repr(e)})
        killTree(backend)
        if args.samples > 0:
            log(f"probes: unhealthy -> restart, {args.samples} samples per mode")
            unhealthyResult = unhealthy(args.samples, args.unhealthy_interval,
                                        args.unhealthy_timeout, args.threshold)
    finally:
        stopAll()
    text = report(levels, unhealthyResult)
    writeResult(args.name, {"machine": info, "args": vars(args), "capacity": levels,
                           "unhealthy": unhealthyResult, "elapsed_s": time.monotonic() - started,
                           "table": text})
    print(text)
    log(f"probes done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
