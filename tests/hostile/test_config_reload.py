"""
Hostile configuration files on reload: SIGHUP to a real C{twistd
orchestrator} after its file was replaced by an alias bomb, a 50 MB file,
deep nesting, an empty, truncated or binary file.  The reload is refused
with the located reason, the running configuration keeps running, the
orchestrator's memory and descriptors stay bounded, and a backend killed
while the reload is read is respawned within a second (the file is read
off the reactor thread).
"""

from __future__ import annotations

import os
import signal

from tests import harness
from tests.hostile import _watch
from tests.hostile._configs import HOSTILE

CONFIG = """
admin: {{listen: "tcp:{{admin_port}}:interface=127.0.0.1"}}
processes:
  backend:
    command: ["{{python}}", "{{demo}}", "--port", "{{backend_port}}"]
    url: "http://127.0.0.1:{{backend_port}}"
    restart: {{policy: always, interval: 0, max_attempts: 100}}
    health: {{interval: 1, start_interval: 0.1}}
"""

#: Growth allowed over one hostile reload (the refused file is never
#: held: the 50 MB one is not even read).
RSS_GROWTH = 32 * 1024 * 1024
FD_GROWTH = 8


def _rejections(orchestrator: harness.Orchestrator, words: str) -> int:
    return sum(1 for line in orchestrator.log().splitlines()
               if "reload rejected" in line and words in line)


def _waitRunning(orchestrator: harness.Orchestrator) -> None:
    harness.waitFor(lambda: orchestrator.status()["status"] == "running", timeout=20,
                    interval=0.05, what="the backend to be running")


def test_hostile_reloads_keep_the_old_configuration(run_orchestrator, tmp_path):
    """Each hostile file is refused on SIGHUP, located; the backend keeps running and a kill during the reload is respawned within 1 s."""
    orchestrator = run_orchestrator(CONFIG.format())
    twistd = orchestrator.process.pid
    _waitRunning(orchestrator)
    path = os.path.join(orchestrator.directory, "orchestrator.yaml")
    with open(path, encoding="utf-8") as f:
        good = f.read()
    latencies = {}
    for name, (write, expected) in sorted(HOSTILE.items()):
        before = _rejections(orchestrator, expected)
        write(path)
        usage = _watch.Usage(twistd)
        usage.take()
        orchestrator.signal(signal.SIGHUP)
        latencies[name] = _watch.respawnSeconds(orchestrator)
        harness.waitFor(lambda: _rejections(orchestrator, expected) > before, timeout=30,
                        interval=0.05, what=f"the {name} reload to be rejected")
        usage.take()
        usage.assertBounded(RSS_GROWTH, FD_GROWTH)
        os.unlink(path)
        with open(path, "w", encoding="utf-8") as f:
            f.write(good)
        _waitRunning(orchestrator)
    assert all(seconds < 1.0 for seconds in latencies.values()), latencies
    assert "Traceback" not in orchestrator.log()
    # The configuration that kept running still reloads normally.
    orchestrator.signal(signal.SIGHUP)
    harness.waitFor(lambda: "configuration reloaded" in orchestrator.log(), timeout=30,
                    what="a good reload")
    assert orchestrator.stop() == 0
