"""
Unit tests for L{orchestrator.supervision.orphans}: the state file of children and the
reaping of a killed orchestrator's leftovers, recognised by pid and kernel
start time, never by name.

The decision logic runs against a fake C{/proc} tree; a few tests use real
C{sleep} processes in their own sessions (bounded real waits, a short grace).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from twisted.internet.task import Clock

from orchestrator.supervision.orphans import (
    ChildRecord,
    OrphanReaper,
    StateFile,
    groupMembers,
    processStartTime,
    reapLeftovers,
)
from tests.harness import pidAlive


class FakeProc:
    """
    A fake C{/proc}: C{add(pid, pgid, start)} writes a C{stat} file;
    C{kill} records signals and makes SIGKILL (and, if C{obeyTerm},
    SIGTERM) remove the process.
    """

    def __init__(self, root, obeyTerm: bool = True) -> None:
        self.root = root
        self.obeyTerm = obeyTerm
        self.signals: list[tuple[int, int]] = []

    @property
    def path(self) -> str:
        return str(self.root)

    def add(self, pid: int, pgid: int, start: int, state: str = "S",
            comm: str = "server (x) y") -> None:
        (self.root / str(pid)).mkdir(exist_ok=True)
        filler = " ".join(["0"] * 16)
        (self.root / str(pid) / "stat").write_text(
            f"{pid} ({comm}) {state} 1 {pgid} {filler} {start} 0 0\n")

    def remove(self, pid: int) -> None:
        (self.root / str(pid) / "stat").unlink()
        (self.root / str(pid)).rmdir()

    def kill(self, pid: int, sig: int) -> None:
        if not (self.root / str(pid)).exists():
            raise ProcessLookupError(pid)
        self.signals.append((pid, sig))
        if sig == signal.SIGKILL or (sig == signal.SIGTERM and self.obeyTerm):
            self.remove(pid)


@pytest.fixture
def fakeProc(tmp_path):
    root = tmp_path / "proc"
    root.mkdir()
    (root / "self").mkdir()  # non-numeric entries are skipped
    return FakeProc(root)


def test_startTimeFromFakeProc(fakeProc):
    """processStartTime reads field 22 even when the command name holds spaces and parentheses."""
    fakeProc.add(42, 42, 123456)
    assert processStartTime(42, fakeProc.path) == 123456
    assert processStartTime(43, fakeProc.path) is None


def test_startTimeOfThisProcess():
    """processStartTime of a real process is field 22 of its /proc/PID/stat."""
    with open(f"/proc/{os.getpid()}/stat") as f:
        expected = int(f.read().rsplit(")", 1)[1].split()[19])
    assert processStartTime(os.getpid()) == expected


def test_groupMembers(fakeProc):
    """A group's members are its live processes started no earlier than the leader; zombies and other groups are left out."""
    fakeProc.add(500, 500, 1000)   # leader
    fakeProc.add(501, 500, 1005)   # grandchild
    fakeProc.add(502, 500, 900)    # older than the leader: not from that run
    fakeProc.add(503, 600, 1010)   # another group
    fakeProc.add(504, 500, 1020, state="Z")  # a zombie
    assert sorted(groupMembers(500, 1000, fakeProc.path)) == [500, 501]


def test_reusedPidIsIgnored(fakeProc):
    """A recorded pid now held by a process with another start time is left alone."""
    fakeProc.add(500, 500, 2000)
    fakeProc.add(501, 500, 2001)
    d = reapLeftovers([ChildRecord("backend", 500, 500, 1000)], Clock(), grace=1,
                      kill=fakeProc.kill, proc=fakeProc.path)
    assert d.result == []
    assert fakeProc.signals == []


def test_leftoverGroupIsTerminated(fakeProc):
    """A recorded leader and its grandchild get SIGTERM; the Deferred fires with their pids once they are gone."""
    fakeProc.add(500, 500, 1000)
    fakeProc.add(501, 500, 1005)
    fakeProc.add(777, 777, 10)  # unrelated
    clock = Clock()
    d = reapLeftovers([ChildRecord("backend", 500, 500, 1000)], clock, grace=5,
                      kill=fakeProc.kill, proc=fakeProc.path)
    assert sorted(fakeProc.signals) == [(500, signal.SIGTERM), (501, signal.SIGTERM)]
    assert sorted(d.result) == [500, 501]
    assert clock.getDelayedCalls() == []


def test_leftoverIgnoringTermIsKilledAfterGrace(fakeProc):
    """Leftovers still there after the grace period get SIGKILL, and not before."""
    fakeProc.obeyTerm = False
    fakeProc.add(500, 500, 1000)
    clock = Clock()
    fired = []
    reapLeftovers([ChildRecord("backend", 500, 500, 1000)], clock, grace=2,
                  kill=fakeProc.kill, proc=fakeProc.path).addCallback(fired.append)
    for _ in range(39):  # 1.95 s in 50 ms polls
        clock.advance(0.05)
    assert fakeProc.signals == [(500, signal.SIGTERM)]
    assert fired == []
    clock.advance(0.1)
    assert fakeProc.signals == [(500, signal.SIGTERM), (500, signal.SIGKILL)]
    assert fired == []  # fires once the killed process is really gone
    clock.advance(0.05)
    assert fired == [[500]]
    assert clock.getDelayedCalls() == []


def test_memberForkedDuringTheGraceIsEndedToo(fakeProc):
    """A process that joins a leftover group while it is being ended (a shell forking) is signalled too."""
    fakeProc.obeyTerm = False
    fakeProc.add(500, 500, 1000)
    clock = Clock()
    fired = []
    reapLeftovers([ChildRecord("backend", 500, 500, 1000)], clock, grace=1,
                  kill=fakeProc.kill, proc=fakeProc.path).addCallback(fired.append)
    fakeProc.add(501, 500, 1500)
    clock.advance(0.05)
    assert (501, signal.SIGTERM) in fakeProc.signals
    for _ in range(25):
        clock.advance(0.05)
    assert {(500, signal.SIGKILL), (501, signal.SIGKILL)} <= set(fakeProc.signals)
    assert fired and sorted(fired[0]) == [500, 501]
    assert clock.getDelayedCalls() == []


def test_leftoverSurvivingSigkillDoesNotBlockTheStart(fakeProc):
    """A leftover that SIGKILL cannot end (not ours to kill) delays the start by at most twice the grace."""
    fakeProc.obeyTerm = False
    fakeProc.add(500, 500, 1000)
    clock = Clock()
    fired = []
    reapLeftovers([ChildRecord("backend", 500, 500, 1000)], clock, grace=1,
                  kill=lambda pid, sig: None, proc=fakeProc.path).addCallback(fired.append)
    for _ in range(50):
        clock.advance(0.05)
    assert fired == [[500]]
    assert clock.getDelayedCalls() == []


def test_grandchildOfDeadLeaderIsFound(fakeProc):
    """When the leader is gone (killed with the orchestrator), its group's survivors are still ended."""
    fakeProc.add(501, 500, 1005)
    d = reapLeftovers([ChildRecord("backend", 500, 500, 1000)], Clock(), grace=1,
                      kill=fakeProc.kill, proc=fakeProc.path)
    assert d.result == [501]


def test_stateFileRecordsPidGroupAndStartTime(tmp_path):
    """The state file records each child's pid, process group and start time, and forgets it when it is gone."""
    path = tmp_path / "state" / "children.json"
    state = StateFile(str(path))
    pid = os.getpid()
    state.record("backend", pid)
    data = json.loads(path.read_text())
    assert data["orchestrator_pid"] == pid
    assert data["children"] == {
        "backend": {"pid": pid, "pgid": pid, "start_time": processStartTime(pid)}}
    assert StateFile(str(path)).load() == [ChildRecord("backend", pid, pid, processStartTime(pid))]
    state.record("backend", None)
    assert json.loads(path.read_text())["children"] == {}
    assert StateFile(str(path)).load() == []
    assert os.listdir(path.parent) == ["children.json"]  # no temporary file left


def test_stateFileSkipsVanishedChild(tmp_path, fakeProc):
    """A child that is already gone when recorded is not written."""
    path = tmp_path / "children.json"
    StateFile(str(path), proc=fakeProc.path).record("backend", 4242)
    assert not path.exists()


def test_unreadableStateFileIsIgnored(tmp_path):
    """A corrupt state file loads as no leftovers rather than failing the start."""
    path = tmp_path / "children.json"
    path.write_text("{not json")
    assert StateFile(str(path)).load() == []
    path.write_text(json.dumps({"children": {"a": {"pid": "x"}, "b": {"pid": 1, "pgid": 1, "start_time": 5}}}))
    assert StateFile(str(path)).load() == [ChildRecord("b", 1, 1, 5)]
    assert StateFile(str(tmp_path / "missing.json")).load() == []


# -- real processes --------------------------------------------------------------


def _waitFor(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _reap(records, grace: float, timeout: float = 5.0) -> list[int]:
    """
    Run reapLeftovers on a Clock, advancing it with real time passing
    (bounded).
    """
    clock = Clock()
    result = []
    reapLeftovers(records, clock, grace=grace).addCallback(result.append)
    deadline = time.monotonic() + timeout
    while not result:
        assert time.monotonic() < deadline, "reapLeftovers never finished"
        time.sleep(0.02)
        clock.advance(0.05)
    return result[0]


@pytest.fixture
def session():
    """
    Start shell commands in new sessions; every group is SIGKILLed at teardown.
    """
    started: list[subprocess.Popen] = []

    def start(script: str, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(["sh", "-c", script], start_new_session=True,
                                   stdout=subprocess.PIPE, stdin=subprocess.PIPE, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        process.wait(10)
        for stream in (process.stdout, process.stdin):
            stream.close()


def test_realLeftoverAndGrandchildAreEnded(tmp_path, session):
    """A real recorded child and the grandchild it started are both gone after reaping."""
    leader = session("sleep 60 & echo $!; exec sleep 60")
    grandchild = int(leader.stdout.readline())
    _waitFor(lambda: _comm(leader.pid) == "sleep")
    state = StateFile(str(tmp_path / "children.json"))
    state.record("backend", leader.pid)
    ended = _reap(StateFile(state.path).load(), grace=3)
    assert sorted(ended) == sorted([leader.pid, grandchild])
    assert leader.wait(5) == -signal.SIGTERM
    _waitFor(lambda: not pidAlive(grandchild))


def test_realLeftoverIgnoringTermIsKilled(tmp_path, session):
    """A real leftover that ignores SIGTERM is SIGKILLed after the grace period."""
    leader = session("trap '' TERM; exec sleep 60")
    _waitFor(lambda: _comm(leader.pid) == "sleep")
    state = StateFile(str(tmp_path / "children.json"))
    state.record("backend", leader.pid)
    assert _reap(state.load(), grace=0.3) == [leader.pid]
    assert leader.wait(5) == -signal.SIGKILL


def test_realReusedPidIsSpared(session):
    """A live process whose start time differs from the record is never signalled."""
    bystander = session("exec sleep 60")
    _waitFor(lambda: _comm(bystander.pid) == "sleep")
    start = processStartTime(bystander.pid)
    assert _reap([ChildRecord("backend", bystander.pid, bystander.pid, start - 1)], grace=0.3) == []
    time.sleep(0.05)
    assert bystander.poll() is None
    assert pidAlive(bystander.pid)


def test_realGrandchildOfDeadLeaderIsEnded(tmp_path, session):
    """A grandchild left in the group after its recorded leader died is ended."""
    leader = session("sleep 60 & echo $!; read x")
    grandchild = int(leader.stdout.readline())
    state = StateFile(str(tmp_path / "children.json"))
    state.record("backend", leader.pid)
    leader.stdin.close()  # read fails: the leader exits, the grandchild stays
    leader.wait(5)
    assert pidAlive(grandchild)
    assert _reap(state.load(), grace=3) == [grandchild]
    _waitFor(lambda: not pidAlive(grandchild))


def test_liveOwnerDetectsAnotherRunningOrchestrator(tmp_path):
    """A state file claimed by a live process (pid and start time match) names its owner."""
    path = tmp_path / "children.json"
    other = subprocess.Popen(["sleep", "30"])
    try:
        path.write_text(json.dumps({"orchestrator_pid": other.pid,
                                    "orchestrator_start_time": processStartTime(other.pid),
                                    "children": {}}))
        assert StateFile(str(path)).liveOwner() == other.pid
        path.write_text(json.dumps({"orchestrator_pid": other.pid,
                                    "orchestrator_start_time": processStartTime(other.pid) - 1,
                                    "children": {}}))
        assert StateFile(str(path)).liveOwner() is None  # the pid was reused
    finally:
        other.kill()
        other.wait()
    StateFile(str(path)).claim()
    assert StateFile(str(path)).liveOwner() is None  # our own claim is not "another"
    assert json.loads(path.read_text())["children"] == {}


def test_secondOrchestratorOnSameStateFileRefused(tmp_path):
    """Starting an orchestrator whose state file belongs to a live one is a clear configuration error; building it reads nothing."""
    from orchestrator.errors import ConfigError
    from tests.fakes import FakeProcessReactor, loadText, makeOrchestrator

    loaded = loadText(f"orchestrator: {{state_dir: {tmp_path}}}\n"
                      "processes:\n  a: {command: ['{python}', '-c', 'a']}\n")
    other = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "children.json").write_text(json.dumps({
            "orchestrator_pid": other.pid, "orchestrator_start_time": processStartTime(other.pid),
            "children": {}}))
        reactor = FakeProcessReactor()
        orchestrator = makeOrchestrator(loaded, reactor, stateFile=True)
        with pytest.raises(ConfigError) as caught:
            orchestrator.checkStateFile()
        with pytest.raises(ConfigError):
            orchestrator.startService()
        assert reactor.spawned == []
        assert f"another orchestrator (pid {other.pid}) is running with this configuration" in \
            caught.value.problems[0]
    finally:
        other.kill()
        other.wait()


def test_orphanReaperReapsOnlyUnknownZombiesOutsideOurGroup(fakeProc):
    """Only exited orphans are reaped: never a pid Twisted spawned, a child in our own group, or a live one."""
    ownGroup = os.getpgrp()
    fakeProc.add(600, 600, 10, state="Z")        # a grandchild re-parented to us, exited
    fakeProc.add(601, 601, 10, state="Z")        # a supervised child: Twisted reaps it
    fakeProc.add(602, ownGroup, 10, state="Z")   # a library's subprocess in our group
    fakeProc.add(603, 603, 10, state="S")        # an orphan still running
    waited = []

    def waitpid(pid, options):
        waited.append((pid, options))
        return pid, signal.SIGKILL  # "killed by SIGKILL"

    reaper = OrphanReaper(Clock(), known=lambda: {601: object()}, children=lambda: [600, 601, 602, 603],
                          waitpid=waitpid, owner={600: "backend"}.get, proc=fakeProc.path)
    assert reaper.reap() == [600]
    assert waited == [(600, os.WNOHANG)]
    assert reaper.reaped == 1


def test_orphanReaperPassesOnChildSignalsOnlyAndLeavesNoTimer(fakeProc):
    """The reaper passes at start, once per SIGCHLD sweep (coalesced, at the next turn) and at stop; idle, no timer is armed."""
    clock = Clock()
    passes = []
    handlers: dict = {}
    reaper = OrphanReaper(clock, known=dict, children=lambda: passes.append(1) or [],
                          proc=fakeProc.path, handlers=handlers)
    reaper.start()
    assert len(passes) == 1
    assert clock.getDelayedCalls() == []
    clock.advance(3600)
    assert len(passes) == 1  # no periodic wake-up
    for handler in list(handlers.values()):  # what twisted.internet.process.reapAllProcesses does
        handler.reapProcess()
        handler.reapProcess()
    assert len(passes) == 1  # not inside Twisted's sweep
    clock.advance(0)
    assert len(passes) == 2  # one pass for two signals
    reaper.stop()
    assert len(passes) == 3  # a last pass at stop
    assert handlers == {}
    assert clock.getDelayedCalls() == []


_SUBREAPER = """
import json, os, subprocess, sys, time
from twisted.internet.task import Clock
from orchestrator.supervision.orphans import OrphanReaper, becomeSubreaper, ownChildren
assert becomeSubreaper()
shell = subprocess.Popen(["/bin/sh", "-c", "sleep 0.3 & echo $!"], stdout=subprocess.PIPE,
                         start_new_session=True)
grandchild = int(shell.stdout.readline())
shell.wait()
adopted = grandchild in ownChildren()
reaper = OrphanReaper(Clock(), known=lambda: [shell.pid])
reaped = []
deadline = time.monotonic() + 10
while grandchild not in reaped and time.monotonic() < deadline:
    reaped += reaper.reap()
    time.sleep(0.02)
print(json.dumps({"grandchild": grandchild, "adopted": adopted, "reaped": reaped,
                  "zombie": os.path.exists(f"/proc/{grandchild}")}))
"""


def test_subreaperAdoptsAndReapsAnOrphanedGrandchild():
    """As a subreaper, a dead child's grandchild is re-parented to us and reaped once it exits (no zombie left)."""
    if not os.path.exists("/proc/self/task"):
        pytest.skip("Linux /proc needed")
    result = subprocess.run([sys.executable, "-c", _SUBREAPER], capture_output=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout.decode().splitlines()[-1])
    assert report["adopted"] is True
    assert report["reaped"] == [report["grandchild"]]
    assert report["zombie"] is False


def test_defaultStateDirDoesNotDependOnTheWorkingDirectory(tmp_path, monkeypatch):
    """The default state folder is derived from the absolute config path: the same from any working directory."""
    from orchestrator.supervision.supervisor import defaultStateDir

    config = str(tmp_path / "conf" / "orchestrator.yaml")
    environ = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    monkeypatch.chdir(tmp_path)
    first = defaultStateDir(config, environ, euid=1000)
    monkeypatch.chdir("/")
    assert defaultStateDir(config, environ, euid=1000) == first
    assert defaultStateDir(os.path.relpath(config, "/"), environ, euid=1000) == first
    assert first.startswith(str(tmp_path / "xdg" / "orchestrator" / "orchestrator.yaml-"))
    assert defaultStateDir(str(tmp_path / "other.yaml"), environ, euid=1000) != first


def test_defaultStateDirBase():
    """XDG_STATE_HOME (absolute) wins; otherwise /var/lib/orchestrator for root, ~/.local/state for a user."""
    from orchestrator.supervision.supervisor import defaultStateDir

    home = os.path.expanduser("~")
    assert defaultStateDir("/etc/o.yaml", {}, euid=0).startswith("/var/lib/orchestrator/o.yaml-")
    assert defaultStateDir("/etc/o.yaml", {}, euid=1000).startswith(
        os.path.join(home, ".local", "state", "orchestrator", "o.yaml-"))
    assert defaultStateDir("/etc/o.yaml", {"XDG_STATE_HOME": "relative"}, euid=1000).startswith(
        os.path.join(home, ".local", "state"))
    assert defaultStateDir("/etc/o.yaml", {"XDG_STATE_HOME": "/x"}, euid=0).startswith("/x/orchestrator/")
