"""
Shared helpers for the benchmarks: process bookkeeping (everything started
is killed, with its whole tree, at exit, even on errors), throwaway venvs
for supervisord and circus, /proc readers, HTTP helpers and statistics.

Stdlib only, so a bench script runs under any Python 3.11 with the
project installed in C{.venv}.
"""

from __future__ import annotations

import atexit
import datetime
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
OUT = os.path.join(BENCH, "out")
DEMO = os.path.join(ROOT, "examples", "backend", "demo_backend.py")
TINY = os.path.join(BENCH, "_tinybackend.py")
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def projectBin(name: str) -> str:
    """
    A console script of the project's venv (C{.venv/bin/NAME}), falling back
    to the folder of the running interpreter.
    """
    candidate = os.path.join(ROOT, ".venv", "bin", name)
    if os.path.exists(candidate):
        return candidate
    return os.path.join(os.path.dirname(sys.executable), name)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------

_started: list[subprocess.Popen] = []


def spawn(argv, *, logPath: str, cwd: str | None = None, env: dict | None = None,
          stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """
    Start a process in its own session (so its group can be killed) with its
    output in C{logPath}; it is killed with all its descendants at exit.
    """
    os.makedirs(os.path.dirname(logPath), exist_ok=True)
    with open(logPath, "ab") as out:
        process = subprocess.Popen(list(map(str, argv)), cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=stdin,
                                   start_new_session=True)
    _started.append(process)
    return process


def _ppidMap() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = procStat(int(entry))
            if fields is not None:
                parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """
    Every live descendant of C{pid} (children first).
    """
    parents = _ppidMap()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def killTree(process: subprocess.Popen, graceful: float = 0.0) -> None:
    """
    End a process, its process group, and every descendant (supervised
    children live in sessions of their own), then reap it.
    """
    if process.poll() is None and graceful > 0:
        tree = descendants(process.pid)
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(graceful)
        except subprocess.TimeoutExpired:
            pass
    else:
        tree = descendants(process.pid) if process.poll() is None else []
    for pid in [process.pid] + tree:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    if process in _started:
        _started.remove(process)


def stopAll(graceful: float = 0.0) -> None:
    for process in list(_started):
        killTree(process, graceful)


def _onSignal(signum, frame):
    raise SystemExit(128 + signum)


atexit.register(stopAll)
signal.signal(signal.SIGTERM, _onSignal)


# -- /proc -----------------------------------------------------------------

def procStat(pid: int) -> list[bytes] | None:
    """
    Fields of C{/proc/PID/stat} from field 3 (state) on, or None.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def cpuSeconds(pid: int) -> float | None:
    """
    utime + stime of a process, in seconds.
    """
    fields = procStat(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rssMB(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def processGone(pid: int) -> bool:
    """
    Whether a process has fully exited: reaped, or a zombie whose threads
    are all gone.  (The main thread of a multi-threaded process shows
    C{Z} as soon as it exits, while its other threads are still being torn
    down and before the parent gets SIGCHLD.)
    """
    fields = procStat(pid)
    if fields is None:
        return True
    if fields[0] not in (b"Z", b"X"):
        return False
    try:
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def childrenOf(ppid: int) -> set[int]:
    return {pid for pid, parent in _ppidMap().items() if parent == ppid}


def waitNewChild(ppid: int, known: set[int], timeout: float, pause: float = 0.0002,
                 old: int | None = None):
    """
    Poll C{/proc} until a process whose parent is C{ppid} and whose pid is
    not in C{known} exists.

    Each round lists C{/proc} (~0.1 ms) and reads the stat of entries not
    seen before; pids seen to belong to another parent are skipped after.
    When C{old} is given, each round also notes when that process was
    first seen gone (see L{processGone}).

    @return: C{(pid, perf_counter when seen, perf_counter when old was
        first seen dead or None)}; pid is None after the timeout.
    """
    seen = set(known)
    deadAt = None
    deadline = time.perf_counter() + timeout
    while True:
        if old is not None and deadAt is None and processGone(old):
            deadAt = time.perf_counter()
        entries = os.listdir("/proc")
        now = time.perf_counter()
        for entry in entries:
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in seen:
                continue
            fields = procStat(pid)
            if fields is None:
                continue
            if int(fields[1]) == ppid:
                return pid, now, deadAt if deadAt is not None else now
            seen.add(pid)
        if now > deadline:
            return None, now, deadAt
        time.sleep(pause)


class CPUMeter:
    """
    CPU% of one process between C{start()} and C{stop()} (100% = one core).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def start(self) -> "CPUMeter":
        self._cpu = cpuSeconds(self.pid) or 0.0
        self._wall = time.monotonic()
        return self

    def stop(self) -> float:
        cpu = (cpuSeconds(self.pid) or 0.0) - self._cpu
        wall = time.monotonic() - self._wall
        return 100.0 * cpu / wall if wall > 0 else 0.0


class SystemCPU:
    """
    How busy the whole machine was between C{start()} and C{stop()}, in %
    of all its cores (from the first line of C{/proc/stat}), to flag runs
    that shared the machine with other work.
    """

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    def start(self) -> "SystemCPU":
        self._total, self._idle = self._read()
        return self

    def stop(self) -> float:
        total, idle = self._read()
        spent = total - self._total
        return 100.0 * (spent - (idle - self._idle)) / spent if spent else 0.0


# -- network ---------------------------------------------------------------

_issuedPorts: set[int] = set()


def freePort() -> int:
    """
    A free TCP port on 127.0.0.1, never one this bench process handed out
    before (the kernel may offer a just-closed port again: two backends, or
    a backend and supervisord's RPC port, then fight over it).
    """
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _issuedPorts:
            _issuedPorts.add(port)
            return port
    raise RuntimeError("no fresh free port")


def httpGet(port: int, path: str, timeout: float = 2.0, method: str = "GET",
            body: bytes | None = None, headers: dict | None = None):
    """
    One request on a fresh connection: C{(status, body)}, or C{(None, error)}.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)
    finally:
        connection.close()


def healthPid(port: int, timeout: float = 1.0) -> int | None:
    """
    The pid the demo backend reports on C{GET /health}, if it answers 200.
    """
    status, body = httpGet(port, "/health", timeout)
    if status != 200:
        return None
    try:
        return json.loads(body).get("pid")
    except ValueError:
        return None


def waitFor(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def waitListening(port: int, timeout: float, process: subprocess.Popen | None = None,
                  what: str = "port") -> None:
    def listening():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    waitFor(listening, timeout, 0.05, what)


def metricsSamples(port: int, timeout: float = 5.0) -> dict[str, float]:
    """
    C{GET /metrics} parsed into C{{'name{labels}': value}} (comments dropped).
    """
    status, body = httpGet(port, "/metrics", timeout)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}: {body!r}")
    samples = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            samples[key] = float(value)
        except ValueError:
            pass
    return samples


def metricSum(samples: dict[str, float], prefix: str, contains: str = "") -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix) and contains in k)


# -- closed-loop load ------------------------------------------------------

def closedLoop(makeClient, connections: int, warmup: float, duration: float, slack: float = 30.0) -> dict:
    """
    The core of the load generators (C{bench/api.py}'s HTTP workers,
    C{bench/_circusload.py}'s ZeroMQ ones): C{connections} threads, each
    with its own client from C{makeClient()}, each sending the next request
    as soon as the previous answer arrived (closed loop) for C{duration}
    seconds after C{warmup}; latencies of the good answers after the
    warm-up, failures counted.

    @param makeClient: returns an object with C{ask() -> (ok, answer
        size)}, C{close()} and a C{reconnects} count; C{ask} must return
        within its own timeout.
    @param slack: seconds a thread may outlive the load before it is
        given up (each C{ask} is bounded, so this is a safety net).
    """
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    answerBytes = [0] * connections
    clients = [makeClient() for _ in range(connections)]
    start = time.perf_counter() + warmup
    stop = start + duration

    def run(i: int) -> None:
        client, mine = clients[i], latencies[i]
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                break
            ok, size = client.ask()
            t1 = time.perf_counter()
            answerBytes[i] = size or answerBytes[i]
            if t0 >= start:
                if ok:
                    mine.append(t1 - t0)
                else:
                    errors[i] += 1
        client.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(warmup + duration + slack)
    return {"latencies": [x for xs in latencies for x in xs], "errors": sum(errors),
            "reconnects": sum(c.reconnects for c in clients), "duration": duration,
            "answer_bytes": max(answerBytes)}


# -- orchestrator ----------------------------------------------------------

def startOrchestrator(directory: str, yaml: str, adminPort: int, timeout: float = 30.0,
                      env: dict | None = None) -> subprocess.Popen:
    """
    Write C{yaml} to C{directory}/orchestrator.yaml and run
    C{twistd -n orchestrator} on it; returns once the admin port listens.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "orchestrator.yaml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(yaml))
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("ORCHESTRATOR") and k not in (
                       "GO_BACKEND_BINARY", "GO_BACKEND_URL", "BACKEND_WORKING_DIR",
                       "HEALTH_CHECK_INTERVAL", "HEALTH_CHECK_TIMEOUT", "AUTO_RESTART",
                       "MAX_RESTART_ATTEMPTS")}
    # The default state folder (leftovers) stays with the run, not in ~ or /var/lib.
    environment["XDG_STATE_HOME"] = os.path.join(directory, "state")
    environment.update(env or {})
    argv = [projectBin("twistd"), "-n", "--pidfile=", "orchestrator", "--config", path,
            "--env-file", os.devnull]
    process = spawn(argv, logPath=os.path.join(directory, "twistd.log"), cwd=directory,
                    env=environment)
    waitListening(adminPort, timeout, process, "orchestrator admin API")
    return process


# -- throwaway venvs for the other supervisors --------------------------------

def ensureVenv(name: str, package: str, executable: str) -> tuple[str | None, str]:
    """
    C{bench/.venv-NAME} with C{package} installed (skipped when
    C{executable} is already there).

    @return: C{(path of the executable or None, note)}.
    """
    venv = os.path.join(BENCH, f".venv-{name}")
    target = os.path.join(venv, "bin", executable)
    if os.path.exists(target):
        return target, "already installed"
    logPath = os.path.join(OUT, f"install-{name}.log")
    os.makedirs(OUT, exist_ok=True)
    log(f"installing {package} into {venv} (log: {logPath})")
    with open(logPath, "w") as out:
        for argv in ([sys.executable, "-m", "venv", venv],
                     [os.path.join(venv, "bin", "pip"), "install", "--quiet", package]):
            try:
                code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=300).returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                return None, f"{' '.join(argv)} failed: {e}"
            if code != 0:
                return None, f"{' '.join(argv)} exited {code} (see {logPath})"
    if not os.path.exists(target):
        return None, f"{target} missing after install"
    return target, "installed now"


def pipVersion(executable: str, package: str) -> str:
    python = os.path.join(os.path.dirname(executable), "python")
    try:
        out = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# -- statistics and output -------------------------------------------------------

def percentile(values, q: float) -> float | None:
    """
    Nearest-rank percentile (q in 0..100) of C{values}.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def summary(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {"n": n, "median": median, "p95": percentile(ordered, 95), "p99": percentile(ordered, 99),
            "min": ordered[0], "max": ordered[-1], "mean": sum(ordered) / n}


def fmt(value, unit: str = "ms", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return f"{value * 1000:.{digits}f} ms"
    return f"{value:.{digits}f}{unit}"


def machineInfo() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    twisted = "?"
    try:
        out = subprocess.run([projectBin("python"), "-c", "import twisted; print(twisted.__version__)"],
                             capture_output=True, text=True, timeout=30)
        twisted = out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "twisted": twisted, "loadavg": load}


def writeResult(name: str, data: dict) -> str:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{name}.json")
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=str)
    return path


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def compiled(tree: str) -> None:
    """
    Write the tree's bytecode, as installing a package does (pip compiles
    it): where C{PYTHONDONTWRITEBYTECODE} is set, an editable checkout
    would otherwise compile its ~100 modules from source at every launch
    (about 0.15 s), while Twisted's come compiled from its wheel.
    """
    subprocess.run([projectBin("python"), "-m", "compileall", "-q", "orchestrator", "plugins",
                    "twisted/plugins"], cwd=tree, check=True, stdout=subprocess.DEVNULL,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
