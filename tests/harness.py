"""
Integration harness: run a real C{twistd -n orchestrator} on 127.0.0.1
with a configuration written for the test, and talk to it over real HTTP.

Everything is bounded: waits poll with a deadline, and every process the
harness starts is killed (with its process group) at cleanup.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_BACKEND = os.path.join(ROOT, "examples", "backend", "demo_backend.py")
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

#: The demo backend behind the admin API, HTTP-probed every second: the
#: smallest real setup (L{startOrchestrator} fills in the ports and paths).
PROBED_DEMO = """
admin: {listen: "tcp:{admin_port}:interface=127.0.0.1"}
processes:
  backend:
    command: ["{python}", "{demo}", "--port", "{backend_port}"]
    url: "http://127.0.0.1:{backend_port}"
    health: {probe: http, interval: 1}
"""


def freePort() -> int:
    """
    A TCP port free on 127.0.0.1 right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def portBound(port: int) -> bool:
    """
    Whether something on this host holds C{127.0.0.1:port}.
    """
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def waitFor(predicate, timeout: float = 15.0, interval: float = 0.02, what: str = "condition"):
    """
    Poll C{predicate} until it returns a true value (returned) or the
    deadline passes (AssertionError naming C{what}).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 30.0) -> tuple[int, dict, bytes]:
    """
    One real HTTP request: C{(status, headers, body)}; never raises on an
    HTTP error status.
    """
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def getJSON(url: str, timeout: float = 30.0, method: str = "GET", headers=None):
    status, _, body = http(method, url, headers=headers, timeout=timeout)
    return status, json.loads(body) if body else None


def pidAlive(pid: int) -> bool:
    """
    Whether a pid exists and is not a zombie.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> list[tuple[int, str, str]]:
    """
    C{(pid, state, cmdline)} of every process whose parent is C{pid}
    (zombies included: state C{Z}).
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0], cmdline))
    return found


@dataclass
class Orchestrator:
    """
    A running C{twistd -n orchestrator}.
    """

    process: subprocess.Popen
    adminPort: int
    backendPort: int
    directory: str
    logPath: str
    extra: dict = field(default_factory=dict)
    #: C{XDG_STATE_HOME} of the orchestrator: its state files (children.json)
    #: are under C{<stateHome>/orchestrator/}.
    stateHome: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.adminPort}"

    @property
    def backendURL(self) -> str:
        return f"http://127.0.0.1:{self.backendPort}"

    def log(self) -> str:
        with open(self.logPath, encoding="utf-8", errors="replace") as f:
            return f.read()

    def status(self, name: str = "backend") -> dict:
        return getJSON(f"{self.url}/api/v1/admin/backend/status" if name == "backend"
                       else f"{self.url}/api/v1/processes/{name}")[1]

    def backendPid(self) -> int | None:
        """
        The backend's pid as the backend itself reports it on /health.
        """
        try:
            status, body = getJSON(f"{self.backendURL}/health", timeout=2)
        except (OSError, ValueError):
            return None
        return body.get("pid") if status == 200 else None

    def waitHealthy(self, timeout: float = 20.0) -> int:
        return waitFor(self.backendPid, timeout, what="the backend to answer /health")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """
        SIGTERM twistd and wait for it to exit; returns its exit code.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """
        SIGKILL twistd (its own group too, in case cleanup needs it).
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def startOrchestrator(tmpdir: str, config: str, env: dict | None = None,
                      adminPort: int | None = None, backendPort: int | None = None,
                      waitListening: bool = True, args: list[str] | None = None,
                      timeout: float = 20.0, cwd: str | None = None,
                      twistdArgs: list[str] | None = None) -> Orchestrator:
    """
    Write C{config} (a YAML template) to C{tmpdir}/orchestrator.yaml and start
    twistd on it, in C{cwd} (default C{tmpdir}).

    The template may use C{{admin_port}}, C{{backend_port}}, C{{python}} and
    C{{demo}} (the demo backend's path); it is dedented first.  The default
    state folder goes under C{tmpdir}/state (C{XDG_STATE_HOME}), never the
    user's home, unless C{env} sets C{XDG_STATE_HOME}.  C{args} go to
    C{orchestrator}, C{twistdArgs} (such as C{--reactor=poll}) to twistd.
    """
    adminPort = adminPort or freePort()
    backendPort = backendPort or freePort()
    text = textwrap.dedent(config)
    for key, value in {"admin_port": adminPort, "backend_port": backendPort,
                       "python": sys.executable, "demo": DEMO_BACKEND}.items():
        text = text.replace("{" + key + "}", str(value))
    configPath = os.path.join(tmpdir, "orchestrator.yaml")
    with open(configPath, "w", encoding="utf-8") as f:
        f.write(text)
    logPath = os.path.join(tmpdir, "twistd.log")
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("ORCHESTRATOR") and k not in (
                       "GO_BACKEND_BINARY", "GO_BACKEND_URL", "BACKEND_WORKING_DIR",
                       "HEALTH_CHECK_INTERVAL", "HEALTH_CHECK_TIMEOUT", "AUTO_RESTART",
                       "MAX_RESTART_ATTEMPTS")}
    environment["XDG_STATE_HOME"] = os.path.join(tmpdir, "state")
    environment.update(env or {})
    command = [TWISTD, "-n", "--pidfile="] + list(twistdArgs or []) + ["orchestrator", "--config", configPath,
               "--env-file", os.devnull] + list(args or [])
    with open(logPath, "ab") as log:
        process = subprocess.Popen(command, cwd=cwd or tmpdir, env=environment, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    handle = Orchestrator(process, adminPort, backendPort, tmpdir, logPath,
                          stateHome=environment["XDG_STATE_HOME"])
    if waitListening:
        def listening():
            if process.poll() is not None:
                raise AssertionError(f"twistd exited with {process.returncode}:\n{handle.log()}")
            try:
                with socket.create_connection(("127.0.0.1", adminPort), timeout=1):
                    return True
            except OSError:
                return False

        try:
            waitFor(listening, timeout, what="the admin API to listen")
        except BaseException:
            # Not handed to any fixture yet: nobody else would end it.
            handle.kill()
            raise
    return handle
