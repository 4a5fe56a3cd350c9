"""Tests for examples/backend/demo_backend.py, run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "backend" / "demo_backend.py"
STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(port: int, method: str, path: str, timeout: float = 2.0) -> tuple[int, dict, str]:
    """Make one request; return (status, decoded JSON body, content type)."""
    data = b"" if method == "POST" else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read()), err.headers.get("Content-Type", "")


@dataclass
class Backend:
    proc: subprocess.Popen
    port: int
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def wait_listening(self, want_status: int | None = 200) -> tuple[int, dict]:
        """Poll /health (up to 10 s) until it answers, with want_status if given."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert self.proc.poll() is None, f"backend exited early:\n{self.output()}"
            try:
                status, body, _ = http(self.port, "GET", "/health", timeout=1.0)
                if want_status is None or status == want_status:
                    return status, body
            except (OSError, urllib.error.URLError):
                pass
            assert time.monotonic() < deadline, f"backend not healthy in time:\n{self.output()}"
            time.sleep(0.05)

    def wait_exit(self, timeout: float = 5.0) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def start_backend(request, tmp_path):
    """Factory: start the demo backend on a free port in its own session."""
    counter = iter(range(1000))

    def start(env: dict[str, str] | None = None, wait: bool = True) -> Backend:
        n = next(counter)
        port = free_port()
        stdout, stderr = tmp_path / f"out{n}.log", tmp_path / f"err{n}.log"
        full_env = {k: v for k, v in os.environ.items() if k not in ("PORT",) and not k.startswith("DEMO_")}
        full_env.update(env or {})
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), "--port", str(port)],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

        def cleanup() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leader and any grandchildren
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)

        request.addfinalizer(cleanup)
        backend = Backend(proc, port, stdout, stderr)
        if wait:
            backend.wait_listening()
        return backend

    return start


def test_health_ok_json(start_backend):
    """GET /health answers 200 JSON with status ok, pid and uptime; / names the service."""
    backend = start_backend()
    status, body, ctype = http(backend.port, "GET", "/health")
    assert status == 200
    assert ctype == "application/json"
    assert body["status"] == "ok"
    assert body["pid"] == backend.proc.pid
    assert isinstance(body["uptime_secs"], float) and body["uptime_secs"] >= 0
    status, body, _ = http(backend.port, "GET", "/")
    assert status == 200
    assert body["service"] == "demo-backend" and body["pid"] == backend.proc.pid
    first_line = backend.stdout.read_text().splitlines()[0]
    assert first_line == f"demo backend listening on http://127.0.0.1:{backend.port} (pid {backend.proc.pid})"


def test_unknown_path_404_and_wrong_method_405(start_backend):
    """Unknown paths answer 404 JSON and wrong methods answer 405 JSON."""
    backend = start_backend()
    status, body, ctype = http(backend.port, "GET", "/nope")
    assert (status, ctype) == (404, "application/json") and "error" in body
    status, body, ctype = http(backend.port, "POST", "/health")
    assert (status, ctype) == (405, "application/json") and body["allowed"] == ["GET", "HEAD"]
    status, _, _ = http(backend.port, "GET", "/crash")
    assert status == 405
    assert backend.proc.poll() is None


def test_health_fail_then_ok(start_backend):
    """POST /health/fail makes /health answer 503 failing; POST /health/ok restores 200."""
    backend = start_backend()
    assert http(backend.port, "POST", "/health/fail")[0] == 200
    status, body, _ = http(backend.port, "GET", "/health")
    assert status == 503 and body["status"] == "failing"
    assert http(backend.port, "POST", "/health/ok")[0] == 200
    assert http(backend.port, "GET", "/health")[0] == 200


def test_health_hang(start_backend):
    """POST /health/hang makes /health never answer while other paths still work."""
    backend = start_backend()
    assert http(backend.port, "POST", "/health/hang")[0] == 200
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        http(backend.port, "GET", "/health", timeout=0.5)
    assert http(backend.port, "GET", "/")[0] == 200


def test_env_health_fail_from_start(start_backend):
    """DEMO_HEALTH=fail makes /health answer 503 from birth."""
    backend = start_backend({"DEMO_HEALTH": "fail"}, wait=False)
    status, body = backend.wait_listening(want_status=None)
    assert status == 503 and body["status"] == "failing"


def test_ready_delay(start_backend):
    """DEMO_READY_DELAY: listening at once, /health 503 starting until the delay passes."""
    t0 = time.monotonic()
    backend = start_backend({"DEMO_READY_DELAY": "1.0"}, wait=False)
    status, body = backend.wait_listening(want_status=None)
    assert status == 503 and body["status"] == "starting"
    backend.wait_listening(want_status=200)
    assert time.monotonic() - t0 >= 1.0


def test_start_delay(start_backend):
    """DEMO_START_DELAY: the port is not bound until the delay has passed."""
    t0 = time.monotonic()
    backend = start_backend({"DEMO_START_DELAY": "0.7"}, wait=False)
    backend.wait_listening()
    assert time.monotonic() - t0 >= 0.7


def test_crash_exit_code(start_backend):
    """POST /crash?code=3 answers 200 then the process exits with code 3."""
    backend = start_backend()
    status, body, _ = http(backend.port, "POST", "/crash?code=3")
    assert status == 200 and body["crashing"] is True
    assert backend.wait_exit() == 3


def test_env_crash_after(start_backend):
    """DEMO_CRASH_AFTER/DEMO_CRASH_CODE make it exit on its own with that code."""
    backend = start_backend({"DEMO_CRASH_AFTER": "0.5", "DEMO_CRASH_CODE": "7"})
    assert backend.wait_exit() == 7


def test_sigterm_clean_exit(start_backend):
    """SIGTERM stops it cleanly: stopping line printed, exit code 0."""
    backend = start_backend()
    backend.proc.send_signal(signal.SIGTERM)
    assert backend.wait_exit() == 0
    assert "demo backend stopping (SIGTERM)" in backend.stdout.read_text()


def test_sigusr1_is_logged_and_changes_nothing(start_backend):
    """SIGUSR1 prints 'demo backend received SIGUSR1' to stdout and the backend keeps serving."""
    backend = start_backend()
    backend.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "demo backend received SIGUSR1" not in backend.stdout.read_text():
        assert time.monotonic() < deadline, backend.output()
        time.sleep(0.05)
    assert backend.proc.poll() is None
    assert http(backend.port, "GET", "/health")[0] == 200


def test_exit_code_on_term(start_backend):
    """DEMO_EXIT_CODE_ON_TERM sets the exit code of a SIGTERM stop."""
    backend = start_backend({"DEMO_EXIT_CODE_ON_TERM": "143"})
    backend.proc.send_signal(signal.SIGTERM)
    assert backend.wait_exit() == 143


def test_env_ignore_sigterm_needs_sigkill(start_backend):
    """DEMO_IGNORE_SIGTERM=1 survives SIGTERM (still serving after 0.5 s) and dies on SIGKILL."""
    backend = start_backend({"DEMO_IGNORE_SIGTERM": "1"})
    backend.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert backend.proc.poll() is None
    assert http(backend.port, "GET", "/health")[0] == 200
    backend.proc.send_signal(signal.SIGKILL)
    assert backend.wait_exit() == -signal.SIGKILL


def test_post_ignore_sigterm(start_backend):
    """POST /ignore-sigterm makes a running backend survive SIGTERM."""
    backend = start_backend()
    status, body, _ = http(backend.port, "POST", "/ignore-sigterm")
    assert status == 200 and body["ignoring_sigterm"] is True
    backend.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert backend.proc.poll() is None


def test_grandchild_same_process_group(start_backend, tmp_path):
    """Grandchildren (env and POST) share the backend's process group and are reported."""
    pidfile = tmp_path / "grandchild.pid"
    backend = start_backend({"DEMO_SPAWN_GRANDCHILD": "1", "DEMO_GRANDCHILD_PIDFILE": str(pidfile)})
    first = int(pidfile.read_text())
    assert os.getpgid(first) == os.getpgid(backend.proc.pid) == backend.proc.pid
    status, body, _ = http(backend.port, "POST", "/spawn-grandchild")
    assert status == 200
    second = body["grandchild_pid"]
    assert os.getpgid(second) == backend.proc.pid
    assert int(pidfile.read_text()) == second
    assert sorted(http(backend.port, "GET", "/health")[1]["grandchild_pids"]) == sorted([first, second])
    assert sorted(http(backend.port, "GET", "/")[1]["grandchild_pids"]) == sorted([first, second])


def test_write_output(start_backend):
    """POST /write-output?lines=N prints N numbered lines to stdout."""
    backend = start_backend()
    status, body, _ = http(backend.port, "POST", "/write-output?lines=3")
    assert status == 200 and body == {"written": 3}
    lines = backend.stdout.read_text().splitlines()
    assert lines[-3:] == ["line 1", "line 2", "line 3"]
