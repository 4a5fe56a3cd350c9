"""
The operator's toolbox against a real C{twistd}, real children and
C{/proc}: a child run as nobody with its umask and limits, three replicas
of the demo backend each probed on its own port, a one-shot migration
gating a server, and a restart on memory growth.

User switching needs root (the CI machine runs the suite as root); these
tests are skipped with that reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.harness import freePort, getJSON, portBound, startOrchestrator, waitFor

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="user/group switching needs the tests to run as root")


@pytest.fixture
def tmpdir():
    directory = tempfile.mkdtemp(prefix="orch-toolbox-")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _proc(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/{name}", encoding="ascii") as f:
        return f.read()


def _processes(orch) -> dict:
    return {p["name"]: p for p in getJSON(f"{orch.url}/api/v1/processes")[1]["processes"]}


def _running(orch, name):
    status = getJSON(f"{orch.url}/api/v1/processes/{name}")[1]
    return status if status["status"] == "running" else None


def test_toolbox(tmpdir):
    """nobody with umask and rlimits, three probed replicas, a failing migration keeping a server down, a memory restart."""
    base = freePort()
    while any(portBound(base + i) for i in range(3)):
        base = freePort()
    orch = startOrchestrator(tmpdir, f"""
        admin: {{listen: "tcp:{{admin_port}}:interface=127.0.0.1"}}
        processes:
          sleeper:
            command: [/bin/sleep, "300"]
            working_dir: /
            user: nobody
            umask: "027"
            rlimits: {{nofile: {{soft: 123, hard: 456}}, core: 0}}
          web:
            command: ["{{python}}", "{{demo}}", "--port", "{{port}}"]
            replicas: 3
            port: {base}
            url: "http://127.0.0.1:{{port}}"
            health: {{probe: http, path: /health, interval: 1, start_interval: 0.2}}
          migrate:
            command: ["{{python}}", "-c", "import sys; sys.exit(1)"]
            restart: {{policy: never}}
          server:
            command: [/bin/sleep, "300"]
            depends_on: {{migrate: {{condition: completed_successfully}}}}
          hog:
            command: ["{{python}}", "-c", "import time; x = bytearray(96 * 2**20); x[::4096] = b'x' * len(x[::4096]); time.sleep(300)"]
            max_memory: 32MiB
            memory_check_interval: 0.5
            restart: {{policy: always, delay: 0.5, max_attempts: 50}}
    """)
    try:
        sleeper = waitFor(lambda: _running(orch, "sleeper"), 30, what="sleeper running")
        pid = sleeper["pid"]
        status = _proc(pid, "status")
        uid = next(line for line in status.splitlines() if line.startswith("Uid:")).split()
        assert uid[1:] == ["65534"] * 4
        assert "Umask:\t0027" in status
        limits = _proc(pid, "limits")
        assert any(line.startswith("Max open files") and line.split()[3:5] == ["123", "456"]
                   for line in limits.splitlines())
        assert any(line.startswith("Max core file size") and line.split()[4:6] == ["0", "0"]
                   for line in limits.splitlines())
        environ = _proc(pid, "environ").split("\0")
        assert "USER=nobody" in environ and "LOGNAME=nobody" in environ

        replicas = [waitFor(lambda n=n: _running(orch, n), 60, what=f"{n} running")
                    for n in ("web-0", "web-1", "web-2")]
        assert len({r["pid"] for r in replicas}) == 3
        for i, replica in enumerate(replicas):
            answer = getJSON(f"http://127.0.0.1:{base + i}/health")[1]
            assert answer["pid"] == replica["pid"]

        def serverBlocked():
            s = getJSON(f"{orch.url}/api/v1/processes/server")[1]
            return s if s.get("waiting_for") else None
        server = waitFor(serverBlocked, 30, what="the server blocked by the migration")
        assert server["status"] == "stopped" and server["pid"] is None
        assert server["waiting_for"] == "waiting for migrate: exited with code 1"
        events = getJSON(f"{orch.url}/api/v1/events")[1]
        assert any(e["type"] == "dependency_failed" and e["process"] == "server"
                   for e in events.get("events", events if isinstance(events, list) else []))

        def hogRestarted():
            s = getJSON(f"{orch.url}/api/v1/processes/hog")[1]
            return s if s["last_exit"] and s["last_exit"]["cause"] == "memory" else None
        hog = waitFor(hogRestarted, 60, what="hog restarted for its memory")
        metrics = _text(f"{orch.url}/metrics")
        assert 'orchestrator_process_restarts_total{process="hog",reason="memory"}' in metrics
        assert 'orchestrator_process_memory_bytes{process="sleeper"}' in metrics
        assert "above max_memory" in orch.log()
    finally:
        assert orch.stop() == 0


def test_migrationGatesServer(tmpdir):
    """A migration that exits 0 releases the server; it then shows stopped and clean, not crashed."""
    orch = startOrchestrator(tmpdir, """
        admin: {listen: "tcp:{admin_port}:interface=127.0.0.1"}
        processes:
          migrate:
            command: ["{python}", "-c", "import time; time.sleep(1)"]
            restart: {policy: never}
          server:
            command: [/bin/sleep, "300"]
            depends_on: {migrate: {condition: completed_successfully}}
    """)
    try:
        server = waitFor(lambda: _running(orch, "server"), 30, what="the server running")
        migrate = getJSON(f"{orch.url}/api/v1/processes/migrate")[1]
        assert migrate["status"] == "stopped" and migrate["last_exit"]["clean"] is True
        assert server["waiting_for"] is None
        assert 'orchestrator_process_exits_total{clean="false",process="migrate"} 0.0' in _text(f"{orch.url}/metrics")
    finally:
        assert orch.stop() == 0


def _text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()

