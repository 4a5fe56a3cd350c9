"""
The operator's toolbox over real sockets: real C{twistd -n orchestrator}
supervising two demo backends on 127.0.0.1, real signals, the real
C{orchestratorctl} in a pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import freePort, waitFor
from tests.test_integration_api import TOKEN, call

pytestmark = pytest.mark.integration

CTL = os.path.join(os.path.dirname(sys.executable), "orchestratorctl")

CONFIG = """
admin:
  listen: "tcp:{admin_port}:interface=127.0.0.1"
  token: "%s"
processes:
  backend:
    command: ["{python}", "{demo}", "--port", "{backend_port}"]
    url: "http://127.0.0.1:{backend_port}"
    stop: {timeout: 5}
    restart: {delay: 0.5}
    health: {interval: 5, timeout: 2, start_timeout: 20}
    groups: [web]
  worker:
    command: ["{python}", "{demo}", "--port", "{worker_port}"]
    url: "http://127.0.0.1:{worker_port}"
    stop: {timeout: 5}
    restart: {delay: 0.05}
    health: {interval: 5, timeout: 2, start_timeout: 20}
    depends_on: [backend]
    groups: [web, jobs]
""" % TOKEN


@pytest.fixture
def orch(run_orchestrator):
    handle = run_orchestrator(CONFIG.replace("{worker_port}", str(freePort())))
    for name in ("backend", "worker"):
        waitFor(lambda: call(handle, "GET", f"/api/v1/processes/{name}")[1]["status"] == "running",
                60, what=f"{name} to be running")
    return handle


def _logText(orch, name: str = "backend") -> str:
    return "\n".join(line["text"] for line in
                     call(orch, "GET", f"/api/v1/processes/{name}/logs?lines=1000")[1]["lines"])


def test_signal_route_delivers_usr1(orch):
    """POST signal USR1 reaches the real backend, which logs it, and it keeps running with the same pid."""
    pid = call(orch, "GET", "/api/v1/processes/backend")[1]["pid"]
    status, body = call(orch, "POST", "/api/v1/processes/backend/signal", body=b'{"signal": "USR1"}')
    assert (status, body["signal"], body["pid"]) == (200, "USR1", pid)
    waitFor(lambda: f"demo backend received SIGUSR1 (pid {pid})" in _logText(orch), 20,
            what="the backend to log SIGUSR1")
    assert call(orch, "GET", "/api/v1/processes/backend")[1]["pid"] == pid


def test_signal_to_stopped_process_is_409(orch):
    """A signal to a stopped process is a 409 over real HTTP."""
    assert call(orch, "POST", "/api/v1/processes/worker/stop")[0] == 200
    status, body = call(orch, "POST", "/api/v1/processes/worker/signal", body=b'{"signal": "USR1"}')
    assert status == 409 and body["success"] is False


def test_group_and_all_routes(orch):
    """Group restart gives each member a new child; stop all then start all act in dependency order."""
    before = {p["name"]: p["pid"] for p in call(orch, "GET", "/api/v1/processes")[1]["processes"]}
    status, body = call(orch, "POST", "/api/v1/groups/web/restart")
    assert status == 200 and body["success"] is True, body
    after = {p["name"]: p["pid"] for p in body["processes"]}
    assert set(after) == {"backend", "worker"}
    assert all(after[n] != before[n] for n in after)
    status, body = call(orch, "POST", "/api/v1/processes/stop")
    assert [p["name"] for p in body["processes"]] == ["worker", "backend"]
    assert {p["status"] for p in body["processes"]} == {"stopped"}
    status, body = call(orch, "POST", "/api/v1/processes/start")
    assert [p["name"] for p in body["processes"]] == ["backend", "worker"]
    assert {p["status"] for p in body["processes"]} == {"running"}, body
    groups = call(orch, "GET", "/api/v1/groups")[1]["groups"]
    assert groups == [{"name": "jobs", "processes": ["worker"]},
                      {"name": "web", "processes": ["backend", "worker"]}]


def test_concurrent_restarts_coalesce(orch):
    """Five restarts of one process at once make one restart: all five answer 200 with the same new pid."""
    before = call(orch, "GET", "/api/v1/processes/backend")[1]
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda _: call(orch, "POST", "/api/v1/processes/backend/restart"),
                                range(5)))
    assert {status for status, _ in answers} == {200}
    assert len({body["pid"] for _, body in answers}) == 1
    assert answers[0][1]["pid"] != before["pid"]
    assert call(orch, "GET", "/api/v1/processes/backend")[1]["restart_count"] == before["restart_count"] + 1


def test_ctl_logs_follow_in_a_pty(orch):
    """orchestratorctl logs NAME -f in a terminal prints new lines as they come and exits 0 on Ctrl-C."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: orchestratorctl with the pty as its terminal
        try:
            os.execv(CTL, [CTL, "--url", orch.url, "--token", TOKEN, "logs", "backend", "-f"])
        finally:
            os._exit(127)
    try:
        # The stream opens some time after the fork: signal until a new
        # line reaches the terminal.
        deadline = time.monotonic() + 30
        seen = b""
        while b"received SIGUSR1" not in seen:
            assert time.monotonic() < deadline, seen
            call(orch, "POST", "/api/v1/processes/backend/signal", body=b'{"signal": "USR1"}')
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                seen += os.read(fd, 4096)
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to orchestratorctl
        rest = b""
        deadline = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "orchestratorctl did not end on Ctrl-C"
            try:
                if select.select([fd], [], [], 0.2)[0]:
                    rest += os.read(fd, 4096)
            except OSError:  # the terminal is closed once the child is gone
                time.sleep(0.1)
        assert os.waitstatus_to_exitcode(status) == 0, rest
        assert b"Traceback" not in seen + rest
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_ctl_status_through_a_closed_pipe(orch):
    """orchestratorctl status into a pipe whose reader is gone (| true) ends quietly with exit 0."""
    result = subprocess.run(f"'{CTL}' --url {orch.url} --token {TOKEN} status | true; "
                            "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                            capture_output=True, timeout=60)
    assert result.stdout.strip() == b"0"
    assert b"Traceback" not in result.stderr and b"BrokenPipe" not in result.stderr
