#!/usr/bin/env python3
"""
Performance at scale (issue 11), side by side in one run: this checkout's
orchestrator, the same at commit C{8dc4c34} ("before", exported with
C{git archive} into C{bench/out/before-8dc4c34} and run with C{PYTHONPATH}
on it), supervisord, circus and Twisted's procmon (a C{.tac} with one
C{ProcessMonitor}), each supervising C{/bin/sleep} children.

1. Start: launch -> every child exec'd (C{/proc/PID/exe} is sleep), for
   1, 100 and 500 children, one supervisor at a time; for the orchestrator
   and supervisord also launch -> their API says all are running.
2. Idle: with 1, 100, 500 children, every supervisor's CPU over C{--idle}
   seconds, all measured at once (they are idle), from
   C{/proc/PID/task/*/schedstat} (nanoseconds: the 10 ms ticks of
   C{/proc/PID/stat} cannot show 0.005%), and its RSS.
3. Status with 100 children, one supervisor at a time (launch, wait
   until its API says all 100 are running, load, stop): one process and
   all processes, requests per second and p50/p99 for 1 connection and
   2x4 connections (closed loop: the load generator of C{bench/api.py} for
   HTTP, C{bench/_circusload.py} with the circus venv's pyzmq for circus).
   The orchestrator's 100 children are HTTP-probed every second (shared
   C{bench/_tinybackend.py} servers); supervisord's C{getProcessInfo} and
   C{getAllProcessInfo} over XML-RPC and circus's C{status} command (one
   watcher, all watchers) over ZeroMQ, neither with probes.
4. C{/metrics} at 1, 100, 500, 1000 processes, each HTTP-probed every
   second (monitor-only, against C{bench/_tinybackend.py}), so each scrape
   finds every process's health lines changed: the scrape time (median of
   C{--scrapes}), and the longest a 5 ms-spaced status request waited
   meanwhile (how long the scrape held the reactor).
5. Respawn with 1 process: C{kill -9} -> new child pid, C{--respawns}
   samples unloaded, then again while 50 keep-alive connections (5
   processes x 10) hammer C{GET /api/v1/processes/backend} (p95 each).

Everything listens on 127.0.0.1; each phase has its deadlines; the run
takes about 9 minutes (C{--idle 30}; the status phase about 2.5 of them).

Usage: .venv/bin/python bench/scale.py [--idle 30] [--only start,status,metrics,respawn]
       [--before COMMIT[,COMMIT...]]
       .venv/bin/python bench/scale.py --only status [--status-duration 5] [--status-repeat 3]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import xmlrpc.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (OUT, PYTHON, ROOT, TINY, CPUMeter, childrenOf, freePort, httpGet, killTree,  # noqa: E402
                     log, machineInfo, metricsSamples, metricSum, percentile, projectBin, rssMB, spawn,
                     stopAll, table, waitFor, waitListening, waitNewChild, writeResult)
from _circusload import circusPython, waitActive  # noqa: E402
from _supervisors import Circus, Supervisord  # noqa: E402

BEFORE_COMMIT = "8dc4c34"
SLEEP = os.path.realpath(shutil.which("sleep") or "/bin/sleep")


def exportedTree(commit: str, name: str) -> str:
    """
    The code at C{commit}, exported once into C{bench/out/NAME}.
    """
    directory = os.path.join(OUT, name)
    if not os.path.isdir(os.path.join(directory, "orchestrator")):
        os.makedirs(directory, exist_ok=True)
        archive = subprocess.run(["git", "-C", ROOT, "archive", commit], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", directory], input=archive, check=True)
    return directory


def beforeTree(commit: str = BEFORE_COMMIT) -> str:
    """
    The code at C{commit}, exported once into bench/out.
    """
    return exportedTree(commit, f"before-{commit}")


# -- CPU with nanosecond resolution -------------------------------------------------------

def cpuNanos(pid: int) -> int | None:
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total if total else None


def execdChildren(pid: int) -> int:
    """
    How many children of C{pid} run sleep now (the orchestrator's children
    pass through their wrappers' execs first).
    """
    count = 0
    for child in childrenOf(pid):
        try:
            if os.readlink(f"/proc/{child}/exe") == SLEEP:
                count += 1
        except OSError:
            pass
    return count


# -- the supervisors, launched without waiting ----------------------------------------------

def programs(n: int, port: int | None = None):
    return [(f"p{i:04d}", [SLEEP, "100000"], port) for i in range(n)]


def orchestratorYAML(directory: str, port: int, progs, extra: str = "") -> str:
    monitorOnly = all(argv is None for _, argv, _ in progs)
    lines = ["admin:", f'  listen: "tcp:{port}:interface=127.0.0.1"',
             f"  default_process: {progs[0][0]}", "orchestrator:", f'  state_dir: "{directory}/state"']
    if monitorOnly:
        lines.append("  enabled: false")
    lines.append("processes:")
    for name, argv, probePort in progs:
        lines.append(f"  {name}:")
        if argv is not None:
            lines.append("    command: " + json.dumps([str(a) for a in argv]))
        if probePort is not None:
            lines.append(f'    url: "http://127.0.0.1:{probePort}"')
            lines.append("    health: {probe: http, interval: 1}")
        lines += ["    " + line for line in extra.strip("\n").splitlines()]
    return "\n".join(lines) + "\n"


class Tool:
    """
    One supervisor under test: launch (returns at once), its API's view.
    """

    def __init__(self, label: str, kind: str, pythonpath: str | None = None, slug: str = "now",
                 twistdOptions=()) -> None:
        """
        @param twistdOptions: extra C{twistd} options for the orchestrator
            (e.g. C{--profile}).
        """
        self.label = label
        self.kind = kind
        self.pythonpath = pythonpath
        self.slug = slug  # names its folders under bench/out/scale
        self.twistdOptions = list(twistdOptions)
        self.process = None
        self.adminPort = self.rpcPort = None

    def launch(self, directory: str, progs, extra: str = "") -> None:
        """
        @param progs: C{(name, argv, port)}; for the orchestrator an argv of
            C{None} is a monitor-only process (probed at C{port}).
        @param extra: YAML added to each orchestrator process.
        """
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        if self.kind == "orchestrator":
            self.adminPort = freePort()
            path = os.path.join(directory, "orchestrator.yaml")
            with open(path, "w") as f:
                f.write(orchestratorYAML(directory, self.adminPort, progs, extra))
            env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
            env["XDG_STATE_HOME"] = os.path.join(directory, "state")
            if self.pythonpath:
                env["PYTHONPATH"] = self.pythonpath
            argv = [projectBin("twistd"), "-n", "--pidfile=", *self.twistdOptions, "orchestrator",
                    "--config", path, "--env-file", os.devnull]
        elif self.kind == "supervisord":
            wrapper = Supervisord(self.label)
            self.rpcPort = wrapper.rpcPort = freePort()
            path = os.path.join(directory, "supervisord.conf")
            with open(path, "w") as f:
                f.write(wrapper.config(directory, progs))
            argv, env = [wrapper.executable, "-n", "-c", path], None
        elif self.kind == "circus":
            wrapper = Circus(self.label)
            path = os.path.join(directory, "circus.ini")
            with open(path, "w") as f:
                f.write(wrapper.config(directory, progs).replace("check_delay = 0.01", "check_delay = 5"))
            self.endpoint, self.circusPython = wrapper.endpoint, circusPython(wrapper.executable)
            argv, env = [wrapper.executable, "--log-level", "warning", "--log-output",
                         os.path.join(directory, "circusd.log"), path], None
        else:  # procmon
            path = os.path.join(directory, "procmon.tac")
            with open(path, "w") as f:
                f.write("from twisted.application import service\n"
                        "from twisted.runner.procmon import ProcessMonitor\n"
                        "application = service.Application('procmon')\n"
                        "monitor = ProcessMonitor()\n"
                        f"for name, argv in {[(n, a) for n, a, _ in progs]!r}:\n"
                        "    monitor.addProcess(name, argv)\n"
                        "monitor.setServiceParent(application)\n")
            argv, env = [projectBin("twistd"), "-n", "--pidfile=", "-y", path], None
        self.cwd = directory
        self.process = spawn(argv, logPath=os.path.join(directory, "out.log"), cwd=directory, env=env)
        self.pid = self.process.pid

    def apiAllRunning(self, n: int) -> bool:
        try:
            if self.kind == "orchestrator":
                status, body = httpGet(self.adminPort, "/api/v1/processes", timeout=2)
                return status == 200 and sum(
                    p["status"] == "running" for p in json.loads(body)["processes"]) == n
            if self.kind == "supervisord":
                rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.rpcPort}/RPC2")
                return sum(p["statename"] == "RUNNING" for p in rpc.supervisor.getAllProcessInfo()) == n
        except (OSError, ValueError, KeyError, xmlrpc.client.Error):
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            killTree(self.process, graceful=20)
            self.process = None


def tools(before: list[tuple[str, str]]) -> list[Tool]:
    """
    @param before: C{(commit, exported tree)} of each "before" measured.
    """
    out = [Tool("orchestrator", "orchestrator")]
    out += [Tool(f"orchestrator before ({commit})", "orchestrator", tree,
                 "before" if len(before) == 1 else f"before-{commit}") for commit, tree in before]
    if Supervisord().available:
        out.append(Tool("supervisord", "supervisord"))
    if Circus().available:
        out.append(Tool("circus", "circus"))
    out.append(Tool("procmon", "procmon"))
    return out


def orchestrators(before) -> list[Tool]:
    return [tool for tool in tools(before) if tool.kind == "orchestrator"]


# -- 1 and 2: start and idle -----------------------------------------------------------------

def startAndIdle(before: list, sizes, idleSeconds: float) -> dict:
    results = {"start": [], "idle": []}
    for n in sizes:
        running = []
        try:
            for tool in tools(before):
                directory = os.path.join(OUT, "scale", f"{tool.kind}-{tool.slug}-{n}")
                t0 = time.monotonic()
                tool.launch(directory, programs(n))
                running.append(tool)
                execd = api = None
                deadline = t0 + 120
                while time.monotonic() < deadline and (execd is None or (api is None and tool.kind in (
                        "orchestrator", "supervisord"))):
                    if tool.process.poll() is not None:
                        raise RuntimeError(f"{tool.label} exited: see {directory}/out.log")
                    if execd is None and execdChildren(tool.pid) >= n:
                        execd = time.monotonic() - t0
                    if execd is not None and api is None and tool.apiAllRunning(n):
                        api = time.monotonic() - t0
                    time.sleep(0.002 if execd is None else 0.02)
                results["start"].append({"tool": tool.label, "children": n, "execd_s": execd,
                                         "api_running_s": api})
                log(f"  start {n}: {tool.label}: exec'd {execd if execd is None else round(execd, 3)} s, "
                    f"API running {api if api is None else round(api, 3)} s")
            time.sleep(3)
            meters = {tool.label: (cpuNanos(tool.pid), time.monotonic()) for tool in running}
            time.sleep(idleSeconds)
            for tool in running:
                cpu0, wall0 = meters[tool.label]
                cpu1, wall1 = cpuNanos(tool.pid), time.monotonic()
                percent = 100.0 * (cpu1 - cpu0) / 1e9 / (wall1 - wall0) if cpu0 and cpu1 else None
                results["idle"].append({"tool": tool.label, "children": n, "idle_cpu_percent": percent,
                                        "rss_mib": rssMB(tool.pid) or 0,  # (kB / 1024)
                                        "seconds": wall1 - wall0})
                log(f"  idle {n}: {tool.label}: {percent:.4f}% CPU, {rssMB(tool.pid):.1f} MiB")
        finally:
            for tool in running:
                tool.stop()
    return results


# -- 3: status with 100 ------------------------------------------------------------------------

STATUS_TARGETS = 4  # tiny HTTP servers the orchestrator's probed processes share
UNPROBED = "orchestrator without probes"


def startTargets(count: int) -> tuple[list, list[int]]:
    """
    C{count} tiny HTTP servers to probe: their processes (for
    L{killTree}) and ports.
    """
    backends, ports = [], []
    for _ in range(count):
        port = freePort()
        backends.append(spawn([PYTHON, TINY, port], logPath=os.path.join(OUT, "scale", "tiny-status.log")))
        waitListening(port, 10, backends[-1], "tiny backend")
        ports.append(port)
    return backends, ports


def probedPrograms(n: int, ports: list[int]):
    """
    C{n} sleep children, each HTTP-probed every second at one of C{ports}.
    """
    return [(f"p{i:04d}", [SLEEP, "100000"], ports[i % len(ports)]) for i in range(n)]


def statusPhase(n: int, duration: float, settle: float, before: list | None = None) -> dict:
    """
    Each supervisor alone with C{n} sleep children: launch, wait until
    every child is exec'd and its own API says all are running, settle,
    put the status load on it, stop.  The orchestrator's children are
    HTTP-probed every second; supervisord and circus have no probes; a
    second orchestrator without probes is the control (what the probes
    cost).

    @param before: C{(commit, exported tree)} of each earlier orchestrator
        measured too (probed, like this checkout's).
    """
    backends: list = []
    rows, context = [], []
    try:
        backends, ports = startTargets(STATUS_TARGETS)
        candidates = [Tool("orchestrator", "orchestrator"), Tool(UNPROBED, "orchestrator")]
        candidates += [Tool(f"orchestrator before ({commit})", "orchestrator", tree, f"before-{commit}")
                       for commit, tree in before or ()]
        if Supervisord().available:
            candidates.append(Tool("supervisord", "supervisord"))
        if Circus().available:
            candidates.append(Tool("circus", "circus"))
        for tool in candidates:
            directory = os.path.join(OUT, "scale", f"status-{tool.label.replace(' ', '-')}-{n}")
            probed = tool.kind == "orchestrator" and tool.label != UNPROBED
            tool.launch(directory, probedPrograms(n, ports) if probed else programs(n))
            try:
                ready = waitAllRunning(tool, n, 120)
                time.sleep(settle)
                probes0 = _probesDone(tool)
                t0 = time.monotonic()
                with open("/proc/loadavg") as f:
                    loadavg = f.read().split()[0]
                rows += [dict(row, children=n) for row in statusLoad([tool], duration, probed)]
                probes1 = _probesDone(tool)
                elapsed = time.monotonic() - t0
                context.append({"tool": tool.label, "ready_s": ready, "loadavg_1min": float(loadavg),
                                "probes_per_s": (probes1 - probes0) / elapsed
                                if probes0 is not None and probes1 is not None else None})
                log(f"  status {tool.label}: all {n} running after {ready:.2f} s, load average {loadavg}"
                    + (f", {context[-1]['probes_per_s']:.0f} probes/s during the load"
                       if context[-1]["probes_per_s"] is not None else ""))
            finally:
                tool.stop()
    finally:
        for backend in backends:
            killTree(backend)
    return {"status": rows, "status_context": context}


def medianRuns(runs: list[list[dict]]) -> list[dict]:
    """
    The status rows of several runs of L{statusPhase} as one: per tool,
    request and load, the median of each figure, each run's req/s kept in
    C{rps_runs} and the errors summed.
    """
    grouped: dict = {}
    for rows in runs:
        for row in rows:
            grouped.setdefault((row["tool"], row["request"], row["load"]), []).append(row)
    out = []
    for same in grouped.values():
        merged = dict(same[0])
        for key, value in same[0].items():
            if isinstance(value, float):
                merged[key] = statistics.median(r[key] for r in same)
        merged["errors"] = sum(r["errors"] for r in same)
        merged["rps_runs"] = [r["rps"] for r in same]
        out.append(merged)
    return out


def waitAllRunning(tool: Tool, n: int, timeout: float) -> float:
    """
    Seconds from now until every child is exec'd and the tool's own API
    says all C{n} are running (circus: its watchers are C{active}).
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if tool.process.poll() is not None:
            raise RuntimeError(f"{tool.label} exited: see {tool.cwd}/out.log")
        if execdChildren(tool.pid) >= n:
            if tool.kind == "circus":
                if waitActive(tool.circusPython, tool.endpoint, n, max(1.0, deadline - time.monotonic())):
                    return time.monotonic() - t0
            elif tool.apiAllRunning(n):
                return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError(f"{tool.label}: not all {n} running after {timeout} s")


def _probesDone(tool: Tool) -> float | None:
    """
    The orchestrator's probes so far (C{orchestrator_health_checks_total}).
    """
    if tool.kind != "orchestrator":
        return None
    try:
        return metricSum(metricsSamples(tool.adminPort, timeout=30), "orchestrator_health_checks_total")
    except (OSError, RuntimeError):
        return None


def statusLoad(running, duration: float, probed: bool = False) -> list[dict]:
    """
    The status requests of each tool in C{running}, one load shape after
    the other; with the server's CPU and the load generators' (this
    process's reaped children) per answer.
    """
    from _circusload import load as circusLoad
    from api import load

    out = []
    for tool in running:
        if tool.kind == "orchestrator":
            requests = [("one process", ("GET", "/api/v1/processes/p0000", b"", {})),
                        ("all processes", ("GET", "/api/v1/processes", b"", {}))]
            port = tool.adminPort
        elif tool.kind == "supervisord":
            requests = [("one process", ("POST", "/RPC2", xmlrpc.client.dumps(
                ("p0000",), "supervisor.getProcessInfo").encode(), {"Content-Type": "text/xml"})),
                        ("all processes", ("POST", "/RPC2", xmlrpc.client.dumps(
                            (), "supervisor.getAllProcessInfo").encode(), {"Content-Type": "text/xml"}))]
            port = tool.rpcPort
        elif tool.kind == "circus":
            requests = [("one process", {"command": "status", "properties": {"name": "p0000"}}),
                        ("all processes", {"command": "status", "properties": {}})]
        else:
            continue
        for what, request in requests:
            for shape, (workers, connections) in (("1 connection", (1, 1)), ("2x4 connections", (2, 4))):
                meter = CPUMeter(tool.pid).start()
                clients = resource.getrusage(resource.RUSAGE_CHILDREN)
                if tool.kind == "circus":
                    run = circusLoad(tool.circusPython, tool.endpoint, request, workers, connections, 0.5,
                                     duration)
                else:
                    run = load(port, *request, workers, connections, 0.5, duration)
                served = meter.stop()
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                clientCPU = (after.ru_utime + after.ru_stime) - (clients.ru_utime + clients.ru_stime)
                out.append({"tool": tool.label, "request": what, "load": shape, "rps": run["rps"],
                            "p50_ms": (run["latency"].get("median") or 0) * 1e3,
                            "p99_ms": (run["latency"].get("p99") or 0) * 1e3, "errors": run["errors"],
                            "mean_ms": (run["latency"].get("mean") or 0) * 1e3,
                            "max_ms": (run["latency"].get("max") or 0) * 1e3,
                            "answer_bytes": run.get("answer_bytes"), "server_cpu_percent": served,
                            "client_cpu_s": clientCPU, "requests": run["requests"], "probed": probed})
                log(f"  status {tool.label} {what} {shape}: {run['rps']:.0f}/s "
                    f"p99 {out[-1]['p99_ms']:.2f} ms")
    return out


# -- 4: /metrics ----------------------------------------------------------------------------------

def metricsScrapes(before: list, levels, scrapes: int) -> list[dict]:
    out = []
    backendPort = freePort()
    backend = spawn([PYTHON, TINY, backendPort], logPath=os.path.join(OUT, "scale", "tiny.log"))
    try:
        waitListening(backendPort, 10, backend, "tiny backend")
        for n in levels:
            for tool in orchestrators(before):
                directory = os.path.join(OUT, "scale", f"metrics-{tool.slug}-{n}")
                progs = [(f"p{i:04d}", None, backendPort) for i in range(n)]
                tool.launch(directory, progs)
                try:
                    waitListening(tool.adminPort, 180, tool.process, "orchestrator admin API")
                    time.sleep(3 + n / 500)  # every process probed a few times
                    count = scrapes if n <= 500 or not tool.pythonpath else 2
                    times, stalls = [], []
                    for _ in range(count):
                        elapsed, stall = _scrapeWithProbe(tool.adminPort)
                        times.append(elapsed)
                        stalls.append(stall)
                        time.sleep(1.1)
                    listing = []
                    for _ in range(count):
                        t0 = time.perf_counter()
                        status, _body = httpGet(tool.adminPort, "/api/v1/processes", timeout=60)
                        listing.append(time.perf_counter() - t0)
                        time.sleep(0.2)
                    out.append({"tool": tool.label, "processes": n, "scrape_ms": percentile(times, 50) * 1e3,
                                "scrape_max_ms": max(times) * 1e3,
                                "status_wait_max_ms": max(stalls) * 1e3, "samples": len(times),
                                "list_ms": percentile(listing, 50) * 1e3})
                    log(f"  /metrics {n}: {tool.label}: {out[-1]['scrape_ms']:.1f} ms "
                        f"(API waited up to {out[-1]['status_wait_max_ms']:.1f} ms)")
                finally:
                    tool.stop()
    finally:
        killTree(backend)
    return out


def _scrapeWithProbe(port: int) -> tuple[float, float]:
    """
    One GET /metrics, while another connection asks for one status every
    5 ms: the scrape's wall time and the longest status wait meanwhile.
    """
    import http.client

    stop = threading.Event()
    waits: list[float] = []

    def prober():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                connection.request("GET", "/api/v1/processes/p0000")
                connection.getresponse().read()
            except (OSError, http.client.HTTPException):
                connection.close()
            waits.append(time.perf_counter() - t0)
            time.sleep(0.005)
        connection.close()

    thread = threading.Thread(target=prober)
    thread.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    status, body = httpGet(port, "/metrics", timeout=120)
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join(60)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return elapsed, max(waits) if waits else 0.0


# -- 5: respawn under API load ------------------------------------------------------------------------

def respawn(before: list, samples: int) -> list[dict]:
    from api import load

    out = []
    for tool in orchestrators(before):
        directory = os.path.join(OUT, "scale", f"respawn-{tool.slug}")
        tool.launch(directory, [("backend", [SLEEP, "100000"], None)],
                    extra="restart: {reset_after: 0.2}\nstart: {ready_after: 0.05}")
        try:
            waitListening(tool.adminPort, 60, tool.process, "orchestrator admin API")
            waitFor(lambda: execdChildren(tool.pid) == 1, 30, what="the child")
            result = {"tool": tool.label}
            for phase in ("unloaded", "50 connections"):
                loader = None
                if phase != "unloaded":
                    loader = threading.Thread(target=lambda: result.__setitem__("load", load(
                        tool.adminPort, "GET", "/api/v1/processes/backend", b"", {}, 5, 10, 0.5,
                        samples * 0.5 + 3)))
                    loader.start()
                    time.sleep(1.0)
                latencies = []
                for _ in range(samples):
                    [child] = childrenOf(tool.pid) or [None]
                    if child is None:
                        time.sleep(0.1)
                        continue
                    # Every pid there now is known: the scan after the kill
                    # reads only the new ones.
                    known = {int(e) for e in os.listdir("/proc") if e.isdigit()}
                    t0 = time.perf_counter()
                    os.kill(child, signal.SIGKILL)
                    pid, seen, _ = waitNewChild(tool.pid, known, 10)
                    if pid is not None:
                        latencies.append(seen - t0)
                    time.sleep(0.35)  # past restart.reset_after: the next kill is a first crash
                if loader is not None:
                    loader.join(samples + 60)
                result[phase] = {"p50_ms": percentile(latencies, 50) * 1e3,
                                 "p95_ms": percentile(latencies, 95) * 1e3, "samples": len(latencies),
                                 "loadavg_1m": os.getloadavg()[0]}
                log(f"  respawn {tool.label} {phase}: p95 {result[phase]['p95_ms']:.2f} ms")
            if "load" in result:
                result["load_rps"] = result.pop("load")["rps"]
            out.append(result)
        finally:
            tool.stop()
    return out


# -- report ----------------------------------------------------------------------------------------------

def report(data: dict) -> str:
    parts = []
    if data.get("start"):
        rows = [[r["tool"], r["children"], _s(r["execd_s"]), _s(r["api_running_s"])] for r in data["start"]]
        parts.append(table(["supervisor", "children", "launch -> all exec'd", "launch -> API: all running"],
                           rows))
    if data.get("idle"):
        rows = [[r["tool"], r["children"], f"{r['idle_cpu_percent']:.4f}%" if r["idle_cpu_percent"] is not None
                 else "-", f"{r['rss_mib']:.1f} MiB"] for r in data["idle"]]
        parts.append(table(["supervisor", "children", "idle CPU", "RSS"], rows))
    if data.get("status"):
        parts.append(statusReport(data["status"]))
    if data.get("metrics"):
        rows = [[r["tool"], r["processes"], f"{r['scrape_ms']:.1f} ms", f"{r['scrape_max_ms']:.1f} ms",
                 f"{r['status_wait_max_ms']:.1f} ms", r["samples"],
                 f"{r['list_ms']:.1f} ms" if "list_ms" in r else "-"] for r in data["metrics"]]
        parts.append(table(["orchestrator", "probed processes", "/metrics p50", "max",
                            "longest status wait during a scrape", "scrapes",
                            "GET /api/v1/processes p50"], rows))
    if data.get("respawn"):
        rows = [[r["tool"], f"{r['unloaded']['p95_ms']:.2f} ms", f"{r['50 connections']['p95_ms']:.2f} ms",
                 f"{r['50 connections']['p95_ms'] / r['unloaded']['p95_ms']:.2f}x",
                 f"{r.get('load_rps', 0):.0f}",
                 " / ".join(f"{r[p].get('loadavg_1m', 0):.2f}" for p in ("unloaded", "50 connections"))]
                for r in data["respawn"]]
        parts.append(table(["orchestrator", "respawn p95 unloaded", "under 50 connections", "ratio",
                            "API req/s meanwhile", "load average (1 min) after each"], rows))
    return "\n\n".join(parts)


def statusReport(status: list[dict]) -> str:
    """
    The status rows, then the orchestrator's ratios against the issue's
    targets (C{>= circus}, C{>= 2x supervisord}, p99 <= 5 ms for one
    process; C{>= 30x supervisord} for all processes).
    """
    rows = [[r["tool"] + (f" ({r.get('children', 100)} HTTP-probed at 1 s)" if r.get("probed") else
                          "" if r["tool"] == UNPROBED else " (no probes)"),
             r["request"], r["load"], f"{r['rps']:.0f}" + _runs(r.get("rps_runs")), f"{r['p50_ms']:.2f} ms",
             f"{r['p99_ms']:.2f} ms", f"{r['max_ms']:.1f} ms" if "max_ms" in r else "-",
             f"{r['server_cpu_percent']:.0f}%" if "server_cpu_percent" in r else "-",
             _perAnswer(r), r.get("answer_bytes") or "-", r["errors"]]
            for r in status]
    text = table([f"server ({status[0].get('children', 100)} children)", "request", "load", "req/s (median; each run)", "p50", "p99",
                  "slowest", "server CPU", "CPU per answer: server / load generator", "answer bytes", "errors"], rows)
    byKey: dict = {}
    for r in status:
        byKey.setdefault((r["request"], r["load"]), {})[r["tool"]] = r
    rows = []
    for (what, shape), runs in byKey.items():
        o, s, c = runs.get("orchestrator"), runs.get("supervisord"), runs.get("circus")
        if o is None:
            continue
        vsS = o["rps"] / s["rps"] if s and s["rps"] else None
        vsC = o["rps"] / c["rps"] if c and c["rps"] else None
        # Each run's ratio (runs are paired by their order).
        eachS = [a / b for a, b in zip(o.get("rps_runs", []), (s or {}).get("rps_runs", [])) if b]
        eachC = [a / b for a, b in zip(o.get("rps_runs", []), (c or {}).get("rps_runs", [])) if b]
        if what == "one process":
            verdict = " / ".join([
                "≥ circus " + ("-" if vsC is None else "met" if vsC >= 1 else "missed"),
                "≥ 2× supervisord " + ("-" if vsS is None else "met" if vsS >= 2 else "missed"),
                "p99 ≤ 5 ms " + ("met" if o["p99_ms"] <= 5 else "missed")])
        else:
            verdict = "≥ 30× supervisord " + ("-" if vsS is None else "met" if vsS >= 30 else "missed")
        rows.append([what, shape, f"{o['rps']:.0f}",
                     "-" if vsS is None else f"{vsS:.2f}×" + _runs(eachS, "×"),
                     "-" if vsC is None else f"{vsC:.2f}×" + _runs(eachC, "×"),
                     f"{o['p99_ms']:.2f} ms", verdict])
    if rows:
        text += "\n\n" + table(["request", "load", "orchestrator req/s", "/ supervisord", "/ circus",
                                 "orchestrator p99", "targets"], rows)
    return text


def _runs(values, unit: str = "") -> str:
    if not values or len(values) < 2:
        return ""
    digits = 2 if unit else 0
    return " (" + ", ".join(f"{v:.{digits}f}{unit}" for v in values) + ")"


def _perAnswer(row: dict) -> str:
    """
    Server and load-generator CPU per answer, in ms: the server's average
    CPU over the whole load (warm-up included) times the measured
    seconds, and the load generators' CPU (their start-up and warm-up
    included, so an upper bound), each over the measured answers.
    """
    if not row.get("requests") or "client_cpu_s" not in row:
        return "-"
    seconds = row["requests"] / row["rps"]
    return (f"{row['server_cpu_percent'] / 100 * seconds / row['requests'] * 1e3:.2f} / "
            f"{row['client_cpu_s'] / row['requests'] * 1e3:.2f} ms")


def _s(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--sizes", default="1,100,500")
    parser.add_argument("--levels", default="1,100,500,1000")
    parser.add_argument("--scrapes", type=int, default=5)
    parser.add_argument("--status-duration", type=float, default=5.0)
    parser.add_argument("--status-children", type=int, default=100)
    parser.add_argument("--status-settle", type=float, default=3.0,
                        help="seconds between all running and the status load")
    parser.add_argument("--status-repeat", type=int, default=1,
                        help="run the status phase N times: medians, and each run's req/s and ratios")
    parser.add_argument("--respawns", type=int, default=20)
    parser.add_argument("--only", default="start,status,metrics,respawn")
    parser.add_argument("--name", default=None,
                        help="result file bench/out/NAME.json (default: scale, or scale-PHASES when "
                             "/metrics is not run, so bench/plot_scale.py keeps its input)")
    parser.add_argument("--before", default=None,
                        help="the commit(s) measured as 'before', comma-separated (default "
                             f"{BEFORE_COMMIT} for start, metrics and respawn; the status phase "
                             "measures a 'before' only when given one)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    only = set(args.only.split(","))
    commits = args.before or (BEFORE_COMMIT if only & {"start", "metrics", "respawn"} else None)
    before = [(commit, beforeTree(commit)) for commit in commits.split(",")] if commits else None
    data: dict = {"machine": machineInfo(), "args": vars(args), "before": commits}
    try:
        if "start" in only:
            log("scale: start, idle")
            data.update(startAndIdle(before, [int(x) for x in args.sizes.split(",")], args.idle))
        if "status" in only:
            log(f"scale: status with {args.status_children} children, one supervisor at a time")
            runs = [statusPhase(args.status_children, args.status_duration, args.status_settle, before)
                    for _ in range(args.status_repeat)]
            data["status_runs"] = runs
            data["status"] = runs[0]["status"] if len(runs) == 1 else medianRuns([r["status"] for r in runs])
            data["status_context"] = [c for r in runs for c in r["status_context"]]
        if "metrics" in only:
            log("scale: /metrics")
            data["metrics"] = metricsScrapes(before, [int(x) for x in args.levels.split(",")], args.scrapes)
        if "respawn" in only:
            log("scale: respawn under API load")
            data["respawn"] = respawn(before, args.respawns)
    finally:
        stopAll()
    text = report(data)
    data["table"] = text
    data["elapsed_s"] = time.monotonic() - started
    writeResult(args.name or ("scale" if "metrics" in only else "scale-" + "-".join(sorted(only))), data)
    print(text)
    log(f"scale done in {data['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
