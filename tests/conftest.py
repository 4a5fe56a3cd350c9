"""
Shared pytest fixtures.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests import harness


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
        _killRecordedGroups(handle.directory)


def _killRecordedGroups(directory: str) -> None:
    import json

    stateRoot = os.path.join(directory, ".orchestrator-state")
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
