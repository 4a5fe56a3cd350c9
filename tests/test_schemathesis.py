"""
Fuzzing the live admin API with schemathesis (C{--checks all}) against
its own OpenAPI document: real C{twistd -n orchestrator} supervising the
two demo backends on 127.0.0.1 (the configuration of
C{tests/test_integration_commands.py}: groups, a dependency).  Every answer must be documented (status,
content type, headers, schema), every schema-valid request accepted and
every schema-invalid one refused, with no 5xx.

Bounded: a fixed seed, a few examples per operation and a time budget.
The two Server-Sent Events routes never end, which a fuzzer reading whole
answers cannot take; they are left out here and checked in
C{tests/test_api.py}, C{tests/test_api_toolbox.py} and the integration
tests.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness import freePort, waitFor
from tests.test_integration_api import call
from tests.test_integration_commands import CONFIG, TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")


@pytest.mark.skipif(not os.path.exists(SCHEMATHESIS), reason="schemathesis is not installed "
                    "(pip install -e '.[test]')")
def test_schemathesis_finds_nothing(run_orchestrator, tmp_path):
    """schemathesis --checks all against the live server reports no failure."""
    orch = run_orchestrator(CONFIG.replace("{worker_port}", str(freePort())))
    waitFor(lambda: call(orch, "GET", "/api/v1/admin/backend/status", token=TOKEN)[1]["status"] == "running",
            60, what="the backend to be running")
    command = [
        SCHEMATHESIS, "run", f"{orch.url}/api/v1/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--exclude-path-regex", "/stream$",
        "--max-examples", "8",
        "--seed", "1",
        "--phases", "examples,coverage,fuzzing",
        "--max-time", "60",
        "--request-timeout", "60",
        "--workers", "1",
        "--no-color",
        "--generation-database", "none",
        "--report-dir", str(tmp_path / "report"),
    ]
    environment = {**os.environ, "SCHEMATHESIS_TELEMETRY": "false", "HOME": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env=environment)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
