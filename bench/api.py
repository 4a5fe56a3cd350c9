#!/usr/bin/env python3
"""
Admin API throughput and latency: the orchestrator's
C{GET /api/v1/admin/backend/status} against supervisord's XML-RPC
C{supervisor.getProcessInfo("backend")}, side by side in one run, while each
supervises 1 and 100 demo backends (the orchestrator probing each over HTTP
every C{--interval} seconds; supervisord has no probes).

The load generator is plain Python: C{--workers} processes, each with
C{--connections} threads, each thread one keep-alive C{http.client}
connection sending a request as soon as the previous answer is read
(closed loop) for C{--duration} seconds after a short warm-up.  It runs on
the same 2 cores as the server, for both servers alike.  Two load shapes:
one connection (latency without queueing) and workers x connections
(throughput).

If the status route is missing (404) the orchestrator is measured on
C{GET /api/v1/admin/backend/health} instead, and the table says so.

Usage: python bench/api.py [--duration 5] [--workers 2] [--connections 4] [--many 100]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (DEMO, OUT, PYTHON, CPUMeter, SystemCPU, closedLoop, freePort, healthPid,  # noqa: E402
                     httpGet, log, machineInfo, stopAll, summary, table, waitFor, writeResult)
from _supervisors import Orchestrator, Supervisord  # noqa: E402

STATUS = "/api/v1/admin/backend/status"
FALLBACK = "/api/v1/admin/backend/health"


# -- the load generator (run as a separate process: --worker) ----------------------

class _Client:
    """
    One keep-alive C{http.client} connection asking the same request
    again and again (a 10 s timeout each); it reconnects by itself after
    a failure or a C{Connection: close}.
    """

    def __init__(self, port: int, method: str, path: str, body: bytes, headers: dict) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.request = (method, path, body, headers)
        self.reconnects = 0

    def ask(self) -> tuple[bool, int | None]:
        method, path, body, headers = self.request
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            size = len(response.read())
            if response.will_close:
                self.connection.close()
                self.reconnects += 1
            return response.status == 200, size
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.reconnects += 1
            return False, None

    def close(self) -> None:
        self.connection.close()


def worker(port: int, method: str, path: str, body: bytes, headers: dict, connections: int,
           warmup: float, duration: float) -> dict:
    return closedLoop(lambda: _Client(port, method, path, body, headers), connections, warmup, duration)


def load(port: int, method: str, path: str, body: bytes, headers: dict, workers: int,
         connections: int, warmup: float, duration: float) -> dict:
    spec = json.dumps({"port": port, "method": method, "path": path, "body": body.decode(),
                       "headers": headers, "connections": connections, "warmup": warmup,
                       "duration": duration})
    return runWorkers([sys.executable, os.path.abspath(__file__), "--worker", spec], workers,
                      warmup + duration + 60, duration)


def runWorkers(argv, workers: int, timeout: float, duration: float) -> dict:
    """
    Run C{workers} copies of a load worker (C{argv}; each prints its
    latencies, errors and reconnects as JSON) at once and merge their
    results.  Also used for circus's ZeroMQ workers (C{_circusload.py}).
    """
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
             for _ in range(workers)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"load worker failed: {err[-1000:]}")
            results.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    latencies = [x for r in results for x in r["latencies"]]
    return {"requests": len(latencies), "rps": len(latencies) / duration,
            "errors": sum(r["errors"] for r in results),
            "reconnects": sum(r["reconnects"] for r in results),
            "answer_bytes": max(r.get("answer_bytes", 0) for r in results),
            "latency": summary(latencies)}


# -- scenarios -------------------------------------------------------------------------

def programs(count: int) -> list:
    result = []
    for i in range(count):
        port = freePort()
        name = "backend" if i == 0 else f"worker{i:03d}"
        result.append((name, [PYTHON, DEMO, "--port", str(port)], port))
    return result


def scenario(supervisor, count: int, args) -> dict:
    directory = os.path.join(OUT, "api", f"{supervisor.kind}-{count}")
    shutil.rmtree(directory, ignore_errors=True)
    progs = programs(count)
    supervisor.start(directory, progs, timeout=120)
    result = {"supervisor": supervisor.label, "processes": count,
              "version": getattr(supervisor, "version", None)}
    try:
        for _name, _argv, port in progs:
            waitFor(lambda: healthPid(port), 120, 0.05, f"{supervisor.label}: backends healthy")
        if supervisor.kind == "orchestrator":
            status, _ = httpGet(supervisor.adminPort, STATUS)
            path = STATUS if status == 200 else FALLBACK
            result["route"] = f"GET {path}"
            if status != 200:
                result["note"] = f"GET {STATUS} answered {status}: measured {FALLBACK} instead"
            request = ("GET", path, b"", {})
            port = supervisor.adminPort
            check = httpGet(port, path)
            if check[0] != 200:
                raise RuntimeError(f"GET {path} answered {check[0]}: {check[1]!r}")
            result["sample_answer"] = check[1].decode()[:300]
        else:
            body = xmlrpc.client.dumps(("backend",), "supervisor.getProcessInfo").encode()
            request = ("POST", "/RPC2", body, {"Content-Type": "text/xml"})
            port = supervisor.rpcPort
            result["route"] = "XML-RPC supervisor.getProcessInfo"
            check = httpGet(port, "/RPC2", method="POST", body=body, headers=request[3])
            if check[0] != 200:
                raise RuntimeError(f"XML-RPC answered {check[0]}")
        time.sleep(args.settle)
        idle = CPUMeter(supervisor.pid).start()
        time.sleep(2)
        result["idle_cpu_percent"] = idle.stop()
        for shape, (workers, connections) in (("1 connection", (1, 1)),
                                              (f"{args.workers}x{args.connections} connections",
                                               (args.workers, args.connections))):
            meter = CPUMeter(supervisor.pid).start()
            machine = SystemCPU().start()
            run = load(port, *request, workers, connections, args.warmup, args.duration)
            run["server_cpu_percent"] = meter.stop()
            run["machine_busy_percent"] = machine.stop()
            result[shape] = run
            log(f"  {shape}: {run['rps']:.0f} req/s, p50 {run['latency'].get('median', 0) * 1e3:.2f} ms, "
                f"p99 {run['latency'].get('p99', 0) * 1e3:.2f} ms, errors {run['errors']}")
    finally:
        supervisor.stop()
    return result


def report(results: list[dict]) -> str:
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["supervisor"], r["processes"], "error: " + r["error"]] + [""] * 7)
            continue
        for shape in [k for k in r if "connection" in k]:
            run = r[shape]
            lat = run["latency"]
            rows.append([r["supervisor"], r["processes"], r.get("route", ""), shape,
                         f"{run['rps']:.0f}", f"{lat.get('median', 0) * 1e3:.2f} ms",
                         f"{lat.get('p99', 0) * 1e3:.2f} ms", f"{run['server_cpu_percent']:.0f}%",
                         f"{r.get('idle_cpu_percent', 0):.1f}%",
                         f"{run['errors']}/{run['reconnects']}"])
    text = table(["server", "processes", "request", "load", "req/s", "p50", "p99",
                  "server CPU under load", "server CPU idle", "errors/reconnects"], rows)
    # Side by side: orchestrator against supervisord for each size and load.
    byKey = {}
    for r in results:
        for shape in [k for k in r if "connection" in k]:
            byKey.setdefault((r["processes"], shape), {})[r["supervisor"]] = r[shape]
    rows = []
    for (count, shape), runs in byKey.items():
        o, s = runs.get("orchestrator"), runs.get("supervisord")
        if not o or not s:
            continue
        rows.append([count, shape, f"{o['rps']:.0f}", f"{s['rps']:.0f}",
                     f"{o['rps'] / s['rps']:.2f}x" if s["rps"] else "",
                     f"{o['latency']['median'] * 1e3:.2f} / {s['latency']['median'] * 1e3:.2f} ms",
                     f"{o['latency']['p99'] * 1e3:.2f} / {s['latency']['p99'] * 1e3:.2f} ms"])
    if rows:
        text += "\n\n" + table(["processes", "load", "orchestrator req/s", "supervisord req/s",
                                 "ratio orchestrator / supervisord", "p50 orch / supd",
                                 "p99 orch / supd"], rows)
    for r in results:
        if r.get("note"):
            text += f"\n- {r['supervisor']} ({r['processes']} processes): {r['note']}"
    return text


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--worker":
        spec = json.loads(sys.argv[2])
        result = worker(spec["port"], spec["method"], spec["path"], spec["body"].encode(),
                        spec["headers"], spec["connections"], spec["warmup"], spec["duration"])
        sys.stdout.write(json.dumps(result))
        sys.stdout.flush()
        os._exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--many", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0, help="orchestrator probe interval")
    args = parser.parse_args(argv)
    started = time.monotonic()
    info = machineInfo()
    results = []
    probeYAML = f"health: {{interval: {args.interval}}}\n"
    try:
        for count in (1, args.many):
            for make in (lambda: Orchestrator("orchestrator", probeYAML), Supervisord):
                supervisor = make()
                log(f"api: {supervisor.label} with {count} processes")
                if not getattr(supervisor, "available", True):
                    results.append({"supervisor": supervisor.label, "processes": count,
                                    "error": f"not installed: {supervisor.note}"})
                    continue
                try:
                    results.append(scenario(supervisor, count, args))
                except Exception as e:
                    log(f"  failed: {e!r}")
                    results.append({"supervisor": supervisor.label, "processes": count,
                                    "error": repr(e)})
    finally:
        stopAll()
    text = report(results)
    writeResult("api", {"machine": info, "args": vars(args), "results": results,
                        "elapsed_s": time.monotonic() - started, "table": text})
    print(text)
    log(f"api done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
