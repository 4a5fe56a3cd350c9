"""
Hostile: an orchestrator SIGKILLed while its child (a shell wrapper) has a
grandchild (the server holding the port), and a child that dies leaving a
grandchild behind.

The parent-death signal reaches only the direct child: the server outlives
a SIGKILLed orchestrator.  The next start, even from another working
directory, must find it in the state file and end it, grandchildren
included, before spawning, so the new backend can bind the port.  While it
runs, the orchestrator is a child subreaper: a grandchild orphaned by its
dying parent is re-parented to it, killed with its group, and reaped.
"""

from __future__ import annotations

import os

import pytest

from tests.harness import children, pidAlive, portBound, waitFor

pytestmark = pytest.mark.integration

#: The server is the shell's child, in the shell's process group.
WRAPPED = """
admin: {listen: "tcp:{admin_port}:interface=127.0.0.1"}
processes:
  backend:
    command: ["/bin/sh", "-c", "{python} {demo} --port {backend_port} & wait"]
    url: "http://127.0.0.1:{backend_port}"
    health: {interval: 1}
    restart: {policy: always, interval: 0, max_attempts: 20}
"""


def _zombieChildren(pid: int) -> list[int]:
    return [child for child, state, _ in children(pid) if state == "Z"]


def test_leftoversOfAKilledOrchestratorAreEndedFromAnotherDirectory(run_orchestrator, tmp_path):
    """After twistd is SIGKILLed, the surviving grandchild holding the port is ended by the next start from another working directory, before the new backend binds the port."""
    first = run_orchestrator(WRAPPED)
    server = first.waitHealthy()
    shell = first.status()["pid"]
    assert server != shell

    first.kill()  # SIGKILL
    waitFor(lambda: not pidAlive(shell), 10, what="the shell to die with the orchestrator")
    assert pidAlive(server), "the grandchild outlives the orchestrator (parent-death signal covers the child only)"
    assert portBound(first.backendPort)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    second = run_orchestrator(WRAPPED, cwd=str(elsewhere), adminPort=first.adminPort,
                              backendPort=first.backendPort)
    newServer = waitFor(lambda: (pid := second.backendPid()) and pid != server and pid,
                        30, what="a new backend answering on the same port")
    assert not pidAlive(server)
    assert pidAlive(newServer)
    log = second.log()
    assert "ending leftovers of a previous run of backend: pids [" in log
    assert str(server) in log.split("ending leftovers", 1)[1].split("\n", 1)[0]
    assert "Address already in use" not in log
    assert second.status()["restart_count"] == 0


def test_grandchildOfADeadChildIsKilledAndReaped(run_orchestrator):
    """When the shell wrapper dies, its server is re-parented to the orchestrator (subreaper), killed with the group, reaped (no zombie) and logged."""
    orchestrator = run_orchestrator(WRAPPED)
    server = orchestrator.waitHealthy()
    shell = orchestrator.status()["pid"]
    os.kill(shell, 9)
    waitFor(lambda: not pidAlive(server), 10, what="the orphaned server to be killed with its group")
    twistd = orchestrator.process.pid
    waitFor(lambda: f"reaped orphan {server} " in orchestrator.log(), 10,
            what="the orphan to be reaped and logged")
    waitFor(lambda: not _zombieChildren(twistd), 10, what="no zombie child of the orchestrator")
    assert "left by backend" in orchestrator.log()
    newServer = orchestrator.waitHealthy()
    assert newServer != server
