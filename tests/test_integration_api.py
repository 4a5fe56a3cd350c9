"""
The admin API over real sockets: real C{twistd -n orchestrator}
supervising the demo backend on 127.0.0.1, driven with a real HTTP client
(urllib) and the real C{orchestratorctl}.
"""

from __future__ import annotations

import http.client as httpclient
import json
import os
import socket
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import freePort, http, pidAlive, waitFor

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
CTL = os.path.join(os.path.dirname(sys.executable), "orchestratorctl")

CONFIG = """
admin:
  listen: "{listen}"
  token: {token}
processes:
  backend:
    command: ["{python}", "{demo}", "--port", "{backend_port}"]
    url: "http://127.0.0.1:{backend_port}"
    stop: {timeout: 5}
    restart: {delay: 0.05}
    health: {interval: 5, timeout: 2, start_timeout: 20}
"""


def _config(listen: str = "tcp:{admin_port}:interface=127.0.0.1", token: str | None = TOKEN) -> str:
    return CONFIG.replace("{listen}", listen).replace("{token}", json.dumps(token))


def call(orch, method: str, path: str, token: str | None = TOKEN, body: bytes | None = None,
         headers: dict | None = None, timeout: float = 60):
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    status, responseHeaders, raw = http(method, orch.url + path, body=body, headers=headers,
                                        timeout=timeout)
    assert {k.lower(): v for k, v in responseHeaders.items()}["content-type"] == "application/json", raw
    return status, json.loads(raw)


def waitRunning(orch, timeout: float = 30):
    def running():
        status, body = call(orch, "GET", "/api/v1/admin/backend/status")
        return body if body["status"] == "running" else None

    return waitFor(running, timeout, what="the backend to be running")


@pytest.fixture
def orch(run_orchestrator):
    handle = run_orchestrator(_config())
    waitRunning(handle)
    return handle


def test_seed_curl_sequence(orch):
    """status, restart, stop, start, health: the seed's sequence over real HTTP, with real effects."""
    status, body = call(orch, "GET", "/api/v1/admin/backend/status")
    assert status == 200
    assert {k: type(v) for k, v in body.items() if k in (
        "status", "pid", "uptime_secs", "restart_count", "last_health_check", "is_running")} == {
        "status": str, "pid": int, "uptime_secs": int, "restart_count": int,
        "last_health_check": str, "is_running": bool}
    assert (body["status"], body["is_running"], body["last_health_check"]) == ("running", True, "healthy")
    first = body["pid"]
    assert orch.backendPid() == first

    status, body = call(orch, "POST", "/api/v1/admin/backend/restart")
    assert status == 200, body
    assert (body["success"], body["message"], body["restart_count"]) == (
        True, "Backend restarted successfully", 1)
    assert body["pid"] != first
    assert orch.backendPid() == body["pid"]
    assert not pidAlive(first)

    status, body = call(orch, "POST", "/api/v1/admin/backend/stop")
    assert (status, body["success"], body["message"]) == (200, True, "Backend stopped successfully")
    assert orch.backendPid() is None
    status, body = call(orch, "GET", "/api/v1/admin/backend/status")
    assert (body["status"], body["pid"], body["is_running"]) == ("stopped", None, False)

    status, body = call(orch, "POST", "/api/v1/admin/backend/start")
    assert status == 200, body
    assert (body["success"], body["message"], body["status"]) == (True, "Backend started successfully", "running")
    assert orch.backendPid() == body["pid"]

    status, body = call(orch, "GET", "/api/v1/admin/backend/health")
    assert status == 200
    assert body == {**body, "orchestrator_enabled": True, "backend_status": "running",
                    "health_check_interval": 5, "auto_restart": True, "max_restart_attempts": 3}


def test_twenty_concurrent_restarts(orch):
    """20 restarts at once over real sockets coalesce: every caller answered with the restart it joined, far fewer children than requests."""
    _, before = call(orch, "GET", "/api/v1/events?limit=1")
    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(call, orch, "POST", "/api/v1/admin/backend/restart", timeout=120)
                   for _ in range(20)]
        answers = [f.result(timeout=180) for f in futures]
    assert all(status == 200 and body["success"] for status, body in answers), answers
    byRestart: dict[int, set[int]] = {}
    for _, body in answers:
        byRestart.setdefault(body["restart_count"], set()).add(body["pid"])
    assert all(len(pids) == 1 for pids in byRestart.values()), byRestart  # one outcome per restart
    assert len(byRestart) < 20, byRestart  # joined, not queued one behind another
    pids = [next(iter(byRestart[count])) for count in sorted(byRestart)]
    _, events = call(orch, "GET", f"/api/v1/events?process=backend&type=starting&since={before['last_sequence']}")
    assert [e["pid"] for e in events["events"]] == pids
    assert orch.backendPid() == pids[-1]
    assert [pid for pid in pids[:-1] if pidAlive(pid)] == []


def test_protections_over_real_sockets(orch):
    """Token, Host, Origin and the body cap hold over a real connection, with JSON answers."""
    assert call(orch, "GET", "/api/v1/processes", token=None)[0] == 401
    assert call(orch, "GET", "/api/v1/processes", token="wrong")[0] == 401
    assert call(orch, "GET", "/api/v1/processes", headers={"Host": "evil.example"})[0] == 421
    assert call(orch, "GET", "/api/v1/processes", headers={"Origin": "http://evil.example"})[0] == 403
    status, body = call(orch, "POST", "/api/v1/admin/backend/stop", body=b"x" * 200_000)
    assert status == 413
    assert "max_body_bytes" in body["error"]
    assert call(orch, "GET", "/api/v1/admin/backend/status")[1]["status"] == "running"
    status, _, text = http("GET", orch.url + "/metrics")
    assert status == 200 and b"backend_status 1.0" in text


def test_unix_socket_listener(run_orchestrator, tmp_path):
    """A unix:...:mode=600 listener creates a 0600 socket that speaks the API (and orchestratorctl)."""
    path = str(tmp_path / "api.sock")
    orch = run_orchestrator(_config(listen=f"unix:{path}:mode=600", token=None), waitListening=False)

    def listening():
        if orch.process.poll() is not None:
            raise AssertionError(orch.log())
        return os.path.exists(path)

    waitFor(listening, 20, what="the unix socket")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    class UnixConnection(httpclient.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(30)
            self.sock.connect(path)

    def get(route):
        connection = UnixConnection("whatever.example")
        connection.request("GET", route)
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    waitFor(lambda: get("/api/v1/admin/backend/status")[1]["status"] == "running", 30,
            what="the backend to be running")
    status, body = get("/api/v1/processes")
    assert status == 200
    assert body["processes"][0]["name"] == "backend"
    result = subprocess.run([CTL, "--url", f"unix:{path}", "status"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "backend" in result.stdout and "running" in result.stdout


def _ctl(orch, *args, token: str | None = TOKEN, url: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env["ORCHESTRATOR_URL"] = url or orch.url
    if token:
        env["ORCHESTRATOR_ADMIN_TOKEN"] = token
    return subprocess.run([CTL, *args], capture_output=True, text=True, timeout=120, env=env)


def test_orchestratorctl(orch):
    """orchestratorctl drives the real server, with exit codes scripts can use."""
    result = _ctl(orch, "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["NAME", "STATUS", "PID", "UPTIME", "RESTARTS",
                                                     "HEALTH", "NOTE"]
    assert result.stdout.splitlines()[1].split()[:2] == ["backend", "running"]

    result = _ctl(orch, "--json", "status", "backend")
    assert result.returncode == 0
    pid = json.loads(result.stdout)["pid"]

    result = _ctl(orch, "restart", "backend")
    assert result.returncode == 0, result.stderr
    newPid = orch.backendPid()
    assert newPid != pid
    assert result.stdout == f"Backend restarted successfully (pid {newPid})\n"

    result = _ctl(orch, "logs", "backend", "--lines", "50")
    assert result.returncode == 0
    assert f"demo backend listening on http://127.0.0.1:{orch.backendPort} (pid {newPid})" in result.stdout

    result = _ctl(orch, "events", "--process", "backend")
    assert result.returncode == 0
    assert "restarted" in result.stdout

    result = _ctl(orch, "reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Configuration reloaded: added -; removed -; changed -; unchanged backend\n"

    result = _ctl(orch, "stop", "backend")
    assert (result.returncode, result.stdout) == (0, "Backend stopped successfully\n")
    result = _ctl(orch, "start", "backend")
    assert result.returncode == 0
    assert result.stdout.startswith("Backend started successfully (pid ")

    result = _ctl(orch, "restart", "nope")
    assert (result.returncode, result.stderr) == (1, "orchestratorctl: no process named 'nope'\n")
    result = _ctl(orch, "status", token="wrong")
    assert result.returncode == 3
    assert "invalid token" in result.stderr
    result = _ctl(orch, "status", url=f"http://127.0.0.1:{freePort()}")
    assert result.returncode == 3
    assert "cannot talk to the orchestrator" in result.stderr
    result = _ctl(orch, "frobnicate")
    assert result.returncode == 2
