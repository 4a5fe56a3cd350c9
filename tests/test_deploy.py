"""
The shipped deployment files (deploy/systemd, deploy/docker, .dockerignore):
what can be checked without systemd running us and without a Docker daemon.

The unit file passes C{systemd-analyze verify}; the compose file validates
against the Compose Specification's JSON Schema; every Dockerfile C{COPY}
source exists and is not excluded; the wheel builds from exactly what the
Dockerfile copies; and the images' commands (ENTRYPOINT + CMD, the
HEALTHCHECK, both compose scenarios) run on this machine outside a
container, on 127.0.0.1.  Building and running the images is not tested
(README, "What is not tested").
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from orchestrator.config.schema import baseSchema
from orchestrator.lifecycle import EXIT_ALREADY_RUNNING, EXIT_CONFIG
from tests.harness import DEMO_BACKEND, ROOT, TWISTD, freePort, getJSON, http, waitFor
from tests.tools import composeValidator, debianTool

UNIT = os.path.join(ROOT, "deploy", "systemd", "orchestrator.service")
DOCKERFILE = os.path.join(ROOT, "deploy", "docker", "Dockerfile")
COMPOSE = os.path.join(ROOT, "deploy", "docker", "compose.yaml")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")


# -- systemd --------------------------------------------------------------------

def _unit() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = None
    with open(UNIT, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
            else:
                key, _, value = line.partition("=")
                assert key not in current, f"{key} set twice"
                current[key] = value
    return sections


def _verify(tmp_path, text: str) -> subprocess.CompletedProcess:
    analyze = debianTool("systemd-analyze", "systemd")
    path = tmp_path / "orchestrator.service"
    path.write_text(text)
    return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=120)


def _localUnitText() -> str:
    # The unit names /opt/orchestrator/.venv/bin/twistd; verify checks that
    # ExecStart is executable, so it points at this checkout's twistd.
    with open(UNIT, encoding="utf-8") as f:
        return f.read().replace("/opt/orchestrator/.venv/bin/twistd", TWISTD)


def test_systemdUnitPassesVerify(tmp_path):
    """systemd-analyze verify accepts the unit with no warning at all."""
    done = _verify(tmp_path, _localUnitText())
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).strip() == ""


def test_systemdVerifyCatchesMistakes(tmp_path):
    """The same check reports a misspelt value (so a clean verify means something)."""
    done = _verify(tmp_path, _localUnitText().replace("KillMode=mixed", "KillMode=mixd"))
    assert "mixd" in done.stdout + done.stderr


def test_systemdUnitSettings():
    """Type=notify, reload by SIGHUP, KillMode=mixed, a stop timeout above shutdown_timeout, restarts only where they help, hardening with the state folder writable."""
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == [str(EXIT_CONFIG), str(EXIT_ALREADY_RUNNING)]
    shutdownDefault = baseSchema()["properties"]["orchestrator"]["properties"]["shutdown_timeout"]["default"]
    assert int(service["TimeoutStopSec"]) > shutdownDefault
    assert int(service["WatchdogSec"]) > 0
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    stateDir = re.search(r"ORCHESTRATOR__ORCHESTRATOR__STATE_DIR=(\S+)", service["Environment"]).group(1)
    writable = service["ReadWritePaths"].split()
    assert stateDir in writable and service["WorkingDirectory"] in writable
    assert "/var/log/orchestrator" in writable
    assert service["EnvironmentFile"].lstrip("-").endswith(".env")
    assert " --nodaemon " in service["ExecStart"] and "--config /etc/orchestrator/" in service["ExecStart"]


# -- Docker ---------------------------------------------------------------------

def _dockerfile() -> list[tuple[str, str]]:
    """
    C{(INSTRUCTION, arguments)} with continuation lines joined.
    """
    with open(DOCKERFILE, encoding="utf-8") as f:
        text = re.sub(r"\\\n\s*", " ", f.read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _instruction(name: str) -> list[str]:
    return [rest for word, rest in _dockerfile() if word == name]


def _ignorePatterns() -> list[str]:
    with open(DOCKERIGNORE, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """
    Docker's rule: the last matching pattern wins, C{!} re-includes, a
    pattern matching a folder excludes everything in it, C{**} spans folders.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def _copies() -> list[str]:
    sources = []
    for rest in _instruction("COPY"):
        words = rest.split()
        sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def test_dockerignoreKeepsSecretsStateAndBuildOutputOut():
    """.dockerignore excludes .env files, venvs, state folders, caches and build output, and keeps the sources."""
    patterns = _ignorePatterns()
    for path in (".env", "conf/.env", "deploy/docker/.env", ".env.production", ".venv/bin/python",
                 "bench/.venv-supervisord/bin/python", ".orchestrator-state/0123/children.json",
                 "tests/x/.orchestrator-state/a", "build/lib/orchestrator/app.py", "dist/x.whl",
                 "txorchestrator.egg-info/PKG-INFO", ".cache/bin/promtool", ".git/config",
                 "orchestrator/__pycache__/app.cpython-311.pyc", "twistd.log"):
        assert _ignored(path, patterns), path
    for path in ("orchestrator/app.py", "conf/orchestrator.yaml", "examples/backend/demo_backend.py",
                 "twisted/plugins/orchestrator_plugin.py", "setup.cfg", "README.md"):
        assert not _ignored(path, patterns), path


def test_dockerfileCopiesExistAndAreNotIgnored():
    """Every COPY source exists in the build context (the repository root) and .dockerignore keeps it."""
    patterns = _ignorePatterns()
    sources = _copies()
    assert "orchestrator" in sources and "conf/orchestrator.yaml" in sources
    for source in sources:
        assert os.path.exists(os.path.join(ROOT, source)), source
        assert not _ignored(source, patterns), source


def test_dockerfileShape():
    """A slim Python base, tini as init, a non-root user, SIGTERM as stop signal, a health check on the health route."""
    (base,) = _instruction("FROM")
    assert re.fullmatch(r"python:3\.\d+-slim", base)
    assert "tini" in " ".join(_instruction("RUN"))
    (user,) = _instruction("USER")
    assert user not in ("root", "0")
    assert _instruction("STOPSIGNAL") == ["SIGTERM"]
    (health,) = _instruction("HEALTHCHECK")
    assert "/api/v1/admin/backend/health" in health
    entrypoint = json.loads(_instruction("ENTRYPOINT")[0])
    assert entrypoint[:2] == ["tini", "--"] and entrypoint[2] == "twistd"


@pytest.mark.slow
def test_wheelBuildsFromWhatTheDockerfileCopies(tmp_path):
    """pip builds and installs the project from exactly the files the Dockerfile copies before its pip install."""
    context = tmp_path / "context"
    run = _dockerfile()
    pipAt = next(i for i, (word, rest) in enumerate(run) if word == "RUN" and "pip install" in rest)
    for word, rest in run[:pipAt]:
        if word == "COPY":
            words = rest.split()
            # Each COPY keeps the layout: "a b ./" or "src ./src".
            assert words[-1] == "./" or words[-1] == "./" + words[0], rest
            for source in words[:-1]:
                if os.path.isdir(os.path.join(ROOT, source)):
                    shutil.copytree(os.path.join(ROOT, source), context / source,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    (context / source).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(os.path.join(ROOT, source), context / source)
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--target", str(target), str(context)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (target / "orchestrator" / "config" / "schema.json").exists()
    assert (target / "orchestrator" / "builtin" / "probes.py").exists()
    assert (target / "twisted" / "plugins" / "orchestrator_plugin.py").exists()


def _imageEnvironment() -> dict[str, str]:
    env = {}
    for rest in _instruction("ENV"):
        for word in shlex.split(rest):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def _local(path: str) -> str:
    return path.replace("/opt/orchestrator", ROOT)


def _cleanEnvironment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORCHESTRATOR", "GO_BACKEND", "NOTIFY_SOCKET", "WATCHDOG_"))
           and k not in ("PORT", "INVOCATION_ID")}
    env.update(extra)
    return env


@pytest.mark.integration
def test_imageCommandsRunHere(tmp_path, processes):
    """The image's ENTRYPOINT + CMD with its ENV and a token serve the demo backend; the HEALTHCHECK command passes against it; STOPSIGNAL exits 0."""
    admin, backend = freePort(), freePort()
    env = _imageEnvironment()
    # 127.0.0.1 instead of the container's 0.0.0.0: tests stay on loopback.
    env["ORCHESTRATOR__ADMIN__LISTEN"] = env["ORCHESTRATOR__ADMIN__LISTEN"].replace(
        "tcp:8000:interface=0.0.0.0", f"tcp:{admin}:interface=127.0.0.1")
    env = _cleanEnvironment(**env, ORCHESTRATOR_ADMIN_TOKEN="t0ken-for-the-test",
                            GO_BACKEND_URL=f"http://127.0.0.1:{backend}", PORT=str(backend))
    entrypoint = json.loads(_instruction("ENTRYPOINT")[0])
    command = [TWISTD] + entrypoint[3:] + [_local(a) for a in json.loads(_instruction("CMD")[0])]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                               stdout=open(tmp_path / "twistd.log", "wb"), stderr=subprocess.STDOUT)
    processes.append(process)
    health = json.loads(_instruction("HEALTHCHECK")[0].split("CMD", 1)[1].strip())
    health = [sys.executable if health[0] == "python" else health[0]] + [
        a.replace("127.0.0.1:8000", f"127.0.0.1:{admin}") for a in health[1:]]
    waitFor(lambda: subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 0
            or process.poll() is not None, timeout=60, what="the HEALTHCHECK to pass")
    assert process.poll() is None, (tmp_path / "twistd.log").read_text()
    wrongToken = subprocess.run(health, env={**env, "ORCHESTRATOR_ADMIN_TOKEN": "wrong"},
                                capture_output=True, timeout=30)
    assert wrongToken.returncode != 0  # the check really goes through the API's token check
    process.send_signal(getattr(signal, _instruction("STOPSIGNAL")[0]))
    assert process.wait(60) == 0


def _compose() -> dict:
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_composeValidatesAgainstTheComposeSpecification():
    """compose.yaml is valid under the Compose Specification JSON Schema; a misspelt key is not."""
    validator = composeValidator()
    document = _compose()
    assert [e.message for e in validator.iter_errors(document)] == []
    broken = json.loads(json.dumps(document))
    broken["services"]["orchestrator"]["stop_grace_perod"] = "1s"
    assert list(validator.iter_errors(broken)) != []


def test_composeScenarios():
    """One service supervises the backend with the API published; the separate-servers profile runs the backend and a monitor-only orchestrator probing it by service name."""
    services = _compose()["services"]
    together = services["orchestrator"]
    assert together["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    context = os.path.normpath(os.path.join(os.path.dirname(COMPOSE), together["build"]["context"]))
    assert context == ROOT
    assert os.path.exists(os.path.join(context, together["build"]["dockerfile"]))
    assert any(str(p).endswith(":8000") for p in together["ports"])
    assert "ORCHESTRATOR_ADMIN_TOKEN" in together["environment"]
    monitor, backend = services["monitor"], services["backend"]
    assert monitor["profiles"] == backend["profiles"] == ["separate-servers"]
    assert monitor["environment"]["ORCHESTRATOR_ENABLED"] == "false"
    assert monitor["environment"]["GO_BACKEND_URL"] == "http://backend:3000"
    assert "backend" in monitor["depends_on"]
    assert backend["command"][-2:] == ["--port", "3000"]


@pytest.mark.integration
def test_separateServersScenarioRunsHere(tmp_path, processes):
    """The compose backend command and the monitor's environment, run here: monitor-only sees the backend running, auto_restart false, nothing spawned."""
    services = _compose()["services"]
    admin, backendPort = freePort(), freePort()
    backend = services["backend"]
    argv = [sys.executable if a == "python" else _local(a) for a in backend["entrypoint"][2:]]
    args = [a.replace("0.0.0.0", "127.0.0.1").replace("3000", str(backendPort))
            for a in backend["command"]]
    assert _local(argv[1]) == DEMO_BACKEND
    processes.append(subprocess.Popen(argv + args, cwd=tmp_path, env=_cleanEnvironment(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    environment = dict(services["monitor"]["environment"])
    environment["ORCHESTRATOR_ADMIN_TOKEN"] = "t0ken-for-the-test"
    environment["GO_BACKEND_URL"] = environment["GO_BACKEND_URL"].replace(
        "backend:3000", f"127.0.0.1:{backendPort}")
    env = _cleanEnvironment(**environment, **{"ORCHESTRATOR__ADMIN__LISTEN":
                                              f"tcp:{admin}:interface=127.0.0.1"})
    entrypoint = json.loads(_instruction("ENTRYPOINT")[0])
    command = [TWISTD] + entrypoint[3:] + [_local(a) for a in json.loads(_instruction("CMD")[0])]
    monitor = subprocess.Popen(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                               stdout=open(tmp_path / "twistd.log", "wb"), stderr=subprocess.STDOUT)
    processes.append(monitor)
    headers = {"Authorization": "Bearer t0ken-for-the-test"}

    def health():
        try:
            status, body = getJSON(f"http://127.0.0.1:{admin}/api/v1/admin/backend/health",
                                   timeout=2, headers=headers)
        except OSError:
            return None
        return body if status == 200 and body["backend_status"] == "running" else None

    body = waitFor(health, timeout=60, what="the monitor to see the backend running")
    assert (body["orchestrator_enabled"], body["auto_restart"]) == (False, False)
    status, _, metrics = http("GET", f"http://127.0.0.1:{admin}/metrics", headers=headers, timeout=5)
    assert status == 200 and b'orchestrator_health_checks_total{process="backend",result="success"}' in metrics
    refused = http("POST", f"http://127.0.0.1:{admin}/api/v1/admin/backend/restart",
                   headers=headers, timeout=5)
    assert refused[0] == 409
    monitor.send_signal(signal.SIGTERM)
    assert monitor.wait(30) == 0
