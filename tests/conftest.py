"""
Shared pytest fixtures.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

import pytest

from tests import harness


_previousTemporary: tuple = ()


def pytest_configure(config):
    """
    Every temporary file and folder of the run (C{tempfile.mkdtemp} in
    tests and fakes, pytest's C{tmp_path}, and whatever the processes the
    tests start create through C{TMPDIR}) goes under one folder, removed
    when the run ends: a run leaves nothing in the system's temp folder.
    Set here, before collection, because some test modules load a
    configuration at import time.
    """
    global _previousTemporary
    root = tempfile.mkdtemp(prefix="orch-tests-")
    _previousTemporary = (root, tempfile.tempdir, os.environ.get("TMPDIR"))
    tempfile.tempdir = root
    os.environ["TMPDIR"] = root


def pytest_unconfigure(config):
    if not _previousTemporary:
        return
    root, tempdir, environ = _previousTemporary
    tempfile.tempdir = tempdir
    if environ is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = environ
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _stateHome(tmp_path_factory, monkeypatch):
    """
    The default state folder (C{$XDG_STATE_HOME/orchestrator}, or
    C{/var/lib/orchestrator} for root) of every orchestrator built in a
    test goes to a temporary folder, never the user's or the system's.
    """
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


@pytest.fixture(autouse=True)
def _noIllegalTransition(request):
    """
    Fail any test during which a process logged an illegal transition
    (L{orchestrator.supervision.status}): the state machine's table is the
    contract, and a test that drives it off the table has found a bug.
    Tests that provoke one on purpose are marked C{illegal_transition_expected}.
    """
    from twisted.logger import globalLogPublisher

    seen: list[dict] = []

    def observe(event):
        if "illegal_transition" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)
    if seen and request.node.get_closest_marker("illegal_transition_expected") is None:
        pytest.fail("illegal state transition(s): " + "; ".join(
            f"{e.get('process')}: {e['illegal_transition']}" for e in seen))


@pytest.fixture
def processes():
    """
    A list for the C{subprocess.Popen} objects a test starts; any still
    running at teardown are killed.
    """
    started: list = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture
def run_orchestrator(tmp_path):
    """
    Start real C{twistd -n orchestrator} instances (see
    L{tests.harness.startOrchestrator}); all are killed at teardown, and so
    is every process left in a process group they recorded.
    """
    started: list[harness.Orchestrator] = []

    def start(config: str, **kwargs) -> harness.Orchestrator:
        directory = kwargs.pop("directory", None) or str(tmp_path)
        handle = harness.startOrchestrator(directory, config, **kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.kill()
    for handle in started:
        killRecordedGroups(handle.stateHome)


def killRecordedGroups(stateHome: str) -> None:
    """
    SIGKILL every process group recorded in a state file under
    C{stateHome}/orchestrator (the harness's C{XDG_STATE_HOME}).
    """
    import json

    stateRoot = os.path.join(stateHome, "orchestrator")
    if not os.path.isdir(stateRoot):
        return
    for sub in os.listdir(stateRoot):
        path = os.path.join(stateRoot, sub, "children.json")
        try:
            with open(path) as f:
                children = json.load(f).get("children", {})
        except (OSError, ValueError):
            continue
        for child in children.values():
            try:
                os.killpg(int(child["pgid"]), signal.SIGKILL)
            except (OSError, KeyError, ValueError):
                pass
