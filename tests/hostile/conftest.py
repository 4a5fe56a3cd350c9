"""
Every hostile test runs the real orchestrator through C{run_orchestrator};
here that fixture also proves the rule every attack shares: whatever the
attack, a limit hit is a clear, counted outcome and never a traceback.
"""

from __future__ import annotations

import pytest

#: Words Twisted and Python put in a log only for an error nobody handled.
UNHANDLED = ("Traceback", "Unhandled")

#: The namespace of a child's echoed output (C{supervision/output.py}): what
#: a child prints (the demo backend's http.server printing a reset probe
#: connection's traceback at shutdown) is its own, not the orchestrator's.
_CHILD_OUTPUT = "[orchestrator.process."


def _unhandled(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if any(word in line for word in UNHANDLED) and _CHILD_OUTPUT not in line]


@pytest.fixture
def run_orchestrator(run_orchestrator):
    """
    L{tests.conftest.run_orchestrator}, failing the test at teardown if any
    orchestrator it started logged a traceback or an unhandled error.
    """
    started = []

    def start(config: str, **kwargs):
        handle = run_orchestrator(config, **kwargs)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        log = handle.log()
        found = _unhandled(log)
        assert not found, f"the orchestrator's log shows an unhandled error:\n{log[-4000:]}"
