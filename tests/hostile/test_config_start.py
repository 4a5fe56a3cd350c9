"""
Hostile configuration files at start: a real C{twistd orchestrator} given
an alias bomb, a 50 MB file, deep nesting, an empty, truncated or binary
file exits non-zero at once with the located reason, no traceback, its
memory bounded, and nothing spawned.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests import harness
from tests.hostile._configs import HOSTILE

#: Peak resident memory allowed to twistd refusing a file (its baseline,
#: Twisted and the plugins imported, is about 45-60 MiB).
PEAK_RSS = 150 * 1024 * 1024

#: A deadline, not a measurement: the alias bomb took 52 s before.
DEADLINE = 30.0


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_refused_at_start(tmp_path, name):
    """twistd refuses a hostile configuration quickly, non-zero, with one located reason and no traceback."""
    write, expected = HOSTILE[name]
    path = str(tmp_path / "orchestrator.yaml")
    write(path)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    process = subprocess.Popen(
        [harness.TWISTD, "-n", "--pidfile=", "orchestrator", "--config", path, "--env-file", os.devnull],
        cwd=str(tmp_path), env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"twistd still running after {DEADLINE}s on {name}")
        process.returncode = os.waitstatus_to_exitcode(status)
        output = process.stdout.read().decode("utf-8", "replace")
    finally:
        if process.returncode is None:
            process.kill()
            process.wait(10)
        process.stdout.close()
    assert process.returncode != 0, output
    assert "Traceback" not in output, output
    located = [line for line in output.splitlines() if expected in line]
    assert len(located) == 1 and path.rsplit("/", 1)[-1] in located[0], output
    assert usage.ru_maxrss * 1024 <= PEAK_RSS, f"peak RSS {usage.ru_maxrss / 1024:.0f} MiB"
