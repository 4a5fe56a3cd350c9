"""
Integration tests of how a real C{twistd -n orchestrator} comes up and goes
away, as a service manager sees it: exit codes, the one line on stderr, a
terminal hang-up, and the C{sd_notify} datagrams of a C{Type=notify} unit.
"""

from __future__ import annotations

import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.harness import DEMO_BACKEND, ROOT, TWISTD, freePort, getJSON, pidAlive, waitFor

pytestmark = pytest.mark.integration

_CONFIG = """\
admin: {{listen: "tcp:{admin}:interface=127.0.0.1"}}
processes:
  backend:
    command: ["{python}", "{demo}", "--port", "{backend}"]
    url: "http://127.0.0.1:{backend}"
    health: {{interval: 1}}
    stop: {{timeout: 5}}
"""

#: Variables of the runner's own environment that would configure the
#: orchestrator under test (or make it think systemd runs it).
_SCRUB = ("GO_BACKEND_BINARY", "GO_BACKEND_URL", "BACKEND_WORKING_DIR", "HEALTH_CHECK_INTERVAL",
          "HEALTH_CHECK_TIMEOUT", "AUTO_RESTART", "MAX_RESTART_ATTEMPTS", "ORCHESTRATOR_ENABLED",
          "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "INVOCATION_ID", "SUPERVISOR_ENABLED",
          "PORT")


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in _SCRUB and not k.startswith("ORCHESTRATOR")}
    env.update(extra)
    return env


def _writeConfig(directory, admin: int, backend: int) -> str:
    path = os.path.join(str(directory), "orchestrator.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(_CONFIG.format(admin=admin, backend=backend, python=sys.executable,
                               demo=DEMO_BACKEND))
    return path


def _twistd(config: str) -> list[str]:
    return [TWISTD, "-n", "--pidfile=", "orchestrator", "--config", config,
            "--env-file", os.devnull]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_adminPortTakenExitsNonZeroBeforeSpawning(tmp_path, processes):
    """Admin port already bound: twistd exits 1 with one line on stderr, no traceback, and never spawned the backend."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    admin = taken.getsockname()[1]
    backend = freePort()
    config = _writeConfig(tmp_path, admin, backend)
    try:
        result = subprocess.run(_twistd(config), cwd=tmp_path, env=_environment(),
                                capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"orchestrator: admin API cannot listen on tcp:{admin}:interface=127.0.0.1: ")
    assert "Address already in use" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert "Starting backend process" not in result.stdout
    assert "backend started (PID" not in result.stdout


def test_pluginFailingAtStartupExitsOneBeforeSpawning(tmp_path):
    """A plugin whose startup hook raises: exit code 1, one line on stderr naming it, the backend never spawned."""
    admin, backend = freePort(), freePort()
    config = _writeConfig(tmp_path, admin, backend)
    with open(config, "a") as f:
        f.write("plugins: [tests.plugin_samples.broken_startup]\n")
    result = subprocess.run(_twistd(config), cwd=tmp_path, env=_environment(PYTHONPATH=ROOT),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == ("orchestrator: plugin tests.plugin_samples.broken_startup failed in "
                             "startup: startup hook is broken\n")
    assert "Starting backend process" not in result.stdout


def test_invalidConfigurationExitsTwo(tmp_path):
    """An invalid configuration: exit code 2 and the located problem on one stderr line."""
    config = os.path.join(str(tmp_path), "orchestrator.yaml")
    with open(config, "w") as f:
        f.write("processes:\n  backend:\n    command: [/bin/true]\n    helth: {}\n")
    result = subprocess.run(_twistd(config), cwd=tmp_path, env=_environment(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1
    assert "orchestrator.yaml:4:5: processes.backend.helth: unknown key 'helth'" in result.stderr
    assert "Usage:" not in result.stdout + result.stderr


def test_secondOrchestratorOnTheSameStateExitsThree(tmp_path, processes):
    """A second orchestrator on a configuration a live one owns exits 3, leaving the first untouched."""
    admin, backend = freePort(), freePort()
    config = _writeConfig(tmp_path, admin, backend)
    first = subprocess.Popen(_twistd(config), cwd=tmp_path, env=_environment(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes.append(first)
    waitFor(lambda: _accepting(backend), timeout=30, what="the first orchestrator's backend")
    second = subprocess.run(_twistd(config), cwd=tmp_path, env=_environment(),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 3, second.stdout + second.stderr
    assert f"another orchestrator (pid {first.pid}) is running" in second.stderr
    assert second.stderr.count("\n") == 1
    assert first.poll() is None
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0


def _onTerminal(tmp_path, processes, argv: list[str], logName: str):
    """
    Run C{argv} as the session leader of a new session whose controlling
    terminal is a pty (C{setsid -c}: stdin is the pty, as a login shell's
    job has), its output in C{logName} (writes to a hung-up terminal
    fail).

    @return: C{(process, master)}: closing C{master} hangs the terminal up.
    """
    master, slave = pty.openpty()
    log = open(tmp_path / logName, "wb")
    try:
        process = subprocess.Popen(["setsid", "-c"] + argv, cwd=tmp_path, env=_environment(),
                                   stdin=slave, stdout=log, stderr=subprocess.STDOUT)
    finally:
        os.close(slave)
        log.close()
    processes.append(process)
    return process, master


def _waitRunning(admin: int) -> None:
    waitFor(lambda: getJSON(f"http://127.0.0.1:{admin}/api/v1/admin/backend/status",
                            timeout=2)[1].get("status") == "running" if _accepting(admin) else False,
            timeout=30, what="the backend running")


def test_terminalHangupStopsGracefully(tmp_path, processes):
    """Run from a terminal (a pty as controlling terminal): closing it stops everything, exit 0, no child left."""
    admin, backend = freePort(), freePort()
    config = _writeConfig(tmp_path, admin, backend)
    process, master = _onTerminal(tmp_path, processes, _twistd(config), "twistd.log")
    _waitRunning(admin)
    children = _children(process.pid)
    assert len(children) == 1
    os.close(master)  # the terminal hangs up
    assert process.wait(30) == 0
    text = (tmp_path / "twistd.log").read_text(errors="replace")
    assert "the controlling terminal hung up; stopping gracefully" in text
    assert "reloading" not in text
    assert not any(pidAlive(pid) for pid in children)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_terminalHangupUnderMakeStops(tmp_path, processes):
    """make run as the terminal's session leader (tmux new 'make run', ssh -t host make run): make passes no SIGHUP on, the orchestrator still stops cleanly, no child left."""
    admin, backend = freePort(), freePort()
    config = _writeConfig(tmp_path, admin, backend)
    (tmp_path / "Makefile").write_text("run:\n\t" + " ".join(_twistd(config)) + "\n")
    process, master = _onTerminal(tmp_path, processes, ["make", "--no-print-directory", "run"],
                                  "make.log")
    _waitRunning(admin)
    [twistd] = _children(process.pid)
    children = _children(twistd)
    assert len(children) == 1
    os.close(master)  # the terminal hangs up: only make gets the SIGHUP
    # make waits for twistd, then dies of the SIGHUP it got (its own habit);
    # twistd's clean exit shows in its log.
    assert process.wait(30) == -signal.SIGHUP, (tmp_path / "make.log").read_text(errors="replace")
    text = (tmp_path / "make.log").read_text(errors="replace")
    assert "the controlling terminal hung up (no SIGHUP reached us); stopping gracefully" in text
    assert "all processes stopped; orchestrator exiting\n" in text.replace("\r\n", "\n")
    assert not any(pidAlive(pid) for pid in children + [twistd])


def test_sighupWithoutTerminalStillReloads(tmp_path, processes):
    """Without a controlling terminal SIGHUP keeps its meaning: reload, the orchestrator goes on."""
    admin, backend = freePort(), freePort()
    config = _writeConfig(tmp_path, admin, backend)
    process = subprocess.Popen(["setsid"] + _twistd(config), cwd=tmp_path, env=_environment(),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    processes.append(process)
    waitFor(lambda: _accepting(admin), timeout=30, what="the admin API")
    process.send_signal(signal.SIGHUP)
    waitFor(lambda: getJSON(f"http://127.0.0.1:{admin}/api/v1/events", timeout=2)[0] == 200
            and any(e["type"] == "config_reloaded"
                    for e in getJSON(f"http://127.0.0.1:{admin}/api/v1/events", timeout=2)[1]["events"]),
            timeout=20, what="a config_reloaded event")
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


class _NotifySocket:
    """
    What systemd listens on: a unix datagram socket, read by a thread that
    stamps each datagram with its arrival time.
    """

    def __init__(self, path: str) -> None:
        import queue
        import threading

        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(path)
        self.socket.settimeout(0.2)
        self.received: list[tuple[float, dict[str, str]]] = []
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.socket.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.received.append((time.monotonic(), fields))
            self._queue.put(fields)

    def waitFor(self, key: str, timeout: float = 30.0) -> dict[str, str]:
        import queue

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                fields = self._queue.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if key in fields:
                return fields
        raise AssertionError(f"no {key} within {timeout}s; got {[f for _, f in self.received]}")

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self.socket.close()


@pytest.fixture
def notifySocket():
    # A short path of its own: AF_UNIX paths are limited to 107 bytes.
    import tempfile

    directory = tempfile.mkdtemp(prefix="orch-notify-")
    sock = _NotifySocket(os.path.join(directory, "notify"))
    yield sock
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_sdNotifySequence(tmp_path, processes, notifySocket):
    """Under NOTIFY_SOCKET: READY with the status once the backend runs, RELOADING+MONOTONIC_USEC then READY on SIGHUP, STOPPING on SIGTERM, WATCHDOG every half WATCHDOG_USEC."""
    admin, backend = freePort(), freePort()
    config = _writeConfig(tmp_path, admin, backend)
    process = subprocess.Popen(
        _twistd(config), cwd=tmp_path, stdin=subprocess.DEVNULL,
        stdout=open(tmp_path / "twistd.log", "wb"), stderr=subprocess.STDOUT,
        env=_environment(NOTIFY_SOCKET=notifySocket.path, WATCHDOG_USEC="1000000"))
    processes.append(process)
    ready = notifySocket.waitFor("READY")
    assert ready["STATUS"] == "1/1 running"
    # READY=1 means what it says: the API answers and the backend serves.
    assert _accepting(admin) and _accepting(backend)
    time.sleep(2.2)  # let watchdog pings accumulate (the cadence is checked below)
    process.send_signal(signal.SIGHUP)
    reloading = notifySocket.waitFor("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifySocket.waitFor("READY")["STATUS"] == "1/1 running"
    process.send_signal(signal.SIGTERM)
    notifySocket.waitFor("STOPPING")
    assert process.wait(30) == 0
    pings = [at for at, fields in notifySocket.received if fields.get("WATCHDOG") == "1"]
    assert len(pings) >= 4, notifySocket.received
    gaps = sorted(b - a for a, b in zip(pings, pings[1:]))
    # Half of WATCHDOG_USEC (0.5 s) apart: on average over the run (a ping
    # delayed by a stall of a loaded machine shortens only the next gap,
    # the schedule keeps its phase), and typically on time (the median).
    mean = (pings[-1] - pings[0]) / (len(pings) - 1)
    assert 0.45 < mean < 0.8, gaps
    assert 0.4 < gaps[len(gaps) // 2] < 0.8, gaps
    order = [next(iter(k for k in ("READY", "RELOADING", "STOPPING") if k in f))
             for _, f in notifySocket.received if {"READY", "RELOADING", "STOPPING"} & set(f)]
    assert order == ["READY", "RELOADING", "READY", "STOPPING"]


def test_shippedConfigurationStartsAsIs(tmp_path, processes):
    """A fresh copy of the checkout: cp conf/.env.example .env, then twistd with the shipped config serves the demo backend."""
    copy = tmp_path / "checkout"
    for part in ("conf", os.path.join("examples", "backend")):
        shutil.copytree(os.path.join(ROOT, part), copy / part)
    shutil.copy(copy / "conf" / ".env.example", copy / ".env")
    admin, backend = freePort(), freePort()
    # Only the two ports move (another test may hold 8000 or 3000); PORT is
    # what the demo backend honours, inherited like any environment.
    env = _environment(ORCHESTRATOR__ADMIN__LISTEN=f"tcp:{admin}:interface=127.0.0.1",
                       GO_BACKEND_URL=f"http://127.0.0.1:{backend}", PORT=str(backend))
    process = subprocess.Popen([TWISTD, "-n", "--pidfile=", "orchestrator"], cwd=copy, env=env,
                               stdin=subprocess.DEVNULL, stdout=open(tmp_path / "twistd.log", "wb"),
                               stderr=subprocess.STDOUT)
    processes.append(process)
    waitFor(lambda: _accepting(admin) or process.poll() is not None, timeout=30, what="the admin API")
    assert process.poll() is None, (tmp_path / "twistd.log").read_text()
    status = waitFor(lambda: (s := getJSON(f"http://127.0.0.1:{admin}/api/v1/admin/backend/status",
                                          timeout=2)[1]).get("status") == "running" and s,
                     timeout=30, what="the backend running")
    assert status["is_running"] is True
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    log = (tmp_path / "twistd.log").read_text()
    assert "ERROR" not in log and "CRITICAL" not in log, log
