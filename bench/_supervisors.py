"""
The three supervisors under test, each behind the same small interface:
start it on a fresh directory supervising the given programs, know its pid
(the parent of the supervised children), tell whether a program is in
steady state, stop it and everything it started.

Each program is C{(name, argv, port)}; C{port} is where it answers
C{GET /health} (or C{None}).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import xmlrpc.client

from _common import (CPUMeter, ensureVenv, freePort, killTree, log, metricsSamples,
                     pipVersion, rssMB, spawn, startOrchestrator, waitListening)


def _yamlList(argv) -> str:
    return "[" + ", ".join('"' + str(a).replace('"', '\\"') + '"' for a in argv) + "]"


class Orchestrator:
    """
    C{twistd -n orchestrator} with a generated YAML config.

    @param processYAML: extra YAML lines (indented for a process block)
        added to every process, e.g. the tuning of a variant.
    @param topYAML: extra top-level YAML.
    """

    kind = "orchestrator"

    def __init__(self, label: str, processYAML: str = "", topYAML: str = "") -> None:
        self.label = label
        self.processYAML = processYAML
        self.topYAML = topYAML
        self.process: subprocess.Popen | None = None
        self.adminPort = None
        self.version = "this checkout"

    def config(self, directory: str, programs) -> str:
        lines = [
            "admin:",
            f'  listen: "tcp:{self.adminPort}:interface=127.0.0.1"',
            "orchestrator:",
            f'  state_dir: "{directory}/state"',
        ]
        lines += self.topYAML.strip("\n").splitlines()
        lines.append("processes:")
        for name, argv, port in programs:
            lines.append(f"  {name}:")
            lines.append(f"    command: {_yamlList(argv)}")
            if port is not None:
                lines.append(f'    url: "http://127.0.0.1:{port}"')
            for extra in self.processYAML.strip("\n").splitlines():
                lines.append("    " + extra)
        return "\n".join(lines) + "\n"

    def start(self, directory: str, programs, timeout: float = 60.0) -> None:
        self.adminPort = freePort()
        self.directory = directory
        self.process = startOrchestrator(directory, self.config(directory, programs),
                                         self.adminPort, timeout)
        self.pid = self.process.pid

    def metrics(self) -> dict:
        return metricsSamples(self.adminPort)

    def steady(self, name: str, childPid: int) -> bool:
        """
        Running, and its automatic-restart attempt counter back at 0, so a
        crash now is a first crash after a healthy run (immediate restart).
        """
        try:
            samples = self.metrics()
        except (OSError, RuntimeError):
            return False
        state = samples.get(f'orchestrator_process_state{{process="{name}",state="running"}}')
        attempts = samples.get(f'orchestrator_process_restart_attempts{{process="{name}"}}')
        return state == 1.0 and attempts == 0.0

    def stop(self) -> None:
        if self.process is not None:
            killTree(self.process, graceful=15)
            self.process = None


class Supervisord:
    """
    supervisord 4 in a throwaway venv, XML-RPC on 127.0.0.1.
    """

    kind = "supervisord"

    def __init__(self, label: str = "supervisord") -> None:
        self.label = label
        self.process = None
        self.executable, self.note = ensureVenv("supervisor", "supervisor", "supervisord")
        self.version = pipVersion(self.executable, "supervisor") if self.executable else None

    @property
    def available(self) -> bool:
        return self.executable is not None

    def config(self, directory: str, programs) -> str:
        text = f"""\
[supervisord]
nodaemon=true
logfile={directory}/supervisord.log
pidfile={directory}/supervisord.pid
childlogdir={directory}
loglevel=info
minfds=1024

[inet_http_server]
port=127.0.0.1:{self.rpcPort}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=http://127.0.0.1:{self.rpcPort}
"""
        for name, argv, _port in programs:
            text += f"""
[program:{name}]
command={shlex.join(map(str, argv))}
startsecs=0
startretries=1000
autorestart=true
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={directory}/{name}.out
stdout_logfile_maxbytes=10MB
"""
        return text

    def start(self, directory: str, programs, timeout: float = 60.0) -> None:
        os.makedirs(directory, exist_ok=True)
        self.rpcPort = freePort()
        self.directory = directory
        path = os.path.join(directory, "supervisord.conf")
        with open(path, "w") as f:
            f.write(self.config(directory, programs))
        self.process = spawn([self.executable, "-n", "-c", path],
                             logPath=os.path.join(directory, "stdout.log"), cwd=directory)
        self.pid = self.process.pid
        waitListening(self.rpcPort, timeout, self.process, "supervisord XML-RPC")

    def rpc(self):
        return xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.rpcPort}/RPC2")

    def steady(self, name: str, childPid: int) -> bool:
        try:
            info = self.rpc().supervisor.getProcessInfo(name)
        except (OSError, xmlrpc.client.Error):
            return False
        return info["statename"] == "RUNNING" and info["pid"] == childPid

    def stop(self) -> None:
        if self.process is not None:
            killTree(self.process, graceful=15)
            self.process = None


class Circus:
    """
    circusd in a throwaway venv.
    """

    kind = "circus"

    def __init__(self, label: str = "circus", checkDelay: float = 0.01) -> None:
        self.label = label
        self.checkDelay = checkDelay
        self.process = None
        self.executable, self.note = ensureVenv("circus", "circus", "circusd")
        self.version = pipVersion(self.executable, "circus") if self.executable else None

    @property
    def available(self) -> bool:
        return self.executable is not None

    def config(self, directory: str, programs) -> str:
        """
        circus.ini for C{programs}; its API endpoint (127.0.0.1) is kept in
        C{self.endpoint}.
        """
        self.endpoint = f"tcp://127.0.0.1:{freePort()}"
        text = f"""\
[circus]
check_delay = {self.checkDelay}
endpoint = {self.endpoint}
pubsub_endpoint = tcp://127.0.0.1:{freePort()}
statsd = False
"""
        for name, argv, _port in programs:
            text += f"""
[watcher:{name}]
cmd = {shlex.join(map(str, argv))}
numprocesses = 1
respawn = True
warmup_delay = 0
max_retry = -1
copy_env = True
graceful_timeout = 10
stdout_stream.class = FileStream
stdout_stream.filename = {directory}/{name}.out
stderr_stream.class = FileStream
stderr_stream.filename = {directory}/{name}.out
"""
        return text

    def start(self, directory: str, programs, timeout: float = 60.0) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        path = os.path.join(directory, "circus.ini")
        with open(path, "w") as f:
            f.write(self.config(directory, programs))
        self.process = spawn([self.executable, "--log-level", "info", "--log-output",
                              os.path.join(directory, "circusd.log"), path],
                             logPath=os.path.join(directory, "stdout.log"), cwd=directory)
        self.pid = self.process.pid

    def steady(self, name: str, childPid: int) -> bool:
        # circus has no readiness notion beyond "spawned": the caller's
        # settle time after /health answers is the steady state.
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            killTree(self.process, graceful=15)
            self.process = None


class Minimal:
    """
    The reference floor: C{bench/_minimal_supervisor.py} (blocking waitpid,
    then posix_spawn at once).  One program only.
    """

    kind = "minimal"
    version = "-"

    def __init__(self, label: str = "floor: waitpid + posix_spawn") -> None:
        self.label = label
        self.process = None

    def start(self, directory: str, programs, timeout: float = 60.0) -> None:
        (_name, argv, _port), = programs
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_minimal_supervisor.py")
        self.process = spawn([sys.executable, script] + list(argv),
                             logPath=os.path.join(directory, "minimal.log"), cwd=directory)
        self.pid = self.process.pid

    def steady(self, name: str, childPid: int) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            killTree(self.process)
            self.process = None


def idleProfile(supervisor, seconds: float) -> dict:
    """
    The supervisor's CPU% while nothing happens, and its RSS.
    """
    meter = CPUMeter(supervisor.pid).start()
    time.sleep(seconds)
    return {"idle_cpu_percent": meter.stop(), "rss_mb": rssMB(supervisor.pid)}


__all__ = ["Orchestrator", "Supervisord", "Circus", "Minimal", "idleProfile", "log"]
