"""
TLS is loaded only when the configuration uses it (L{orchestrator.tls}).

Leaving TLS out changes the whole process (C{sys.modules}), so what is
left out is checked in a fresh interpreter or a real C{twistd}, never in
the test process itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from orchestrator import tls
from tests import harness

BACKEND = harness.PROBED_DEMO


class TestUses:
    def test_plain_configuration_uses_no_tls(self):
        """http:// URLs and a tcp: listener need no TLS."""
        data = {"admin": {"listen": "tcp:8000"}, "processes": {"api": {"url": "http://127.0.0.1:3000"}},
                "notifiers": [{"type": "webhook", "url": "http://hooks.internal/x"}]}
        assert tls.uses(data) == []

    def test_every_https_url_and_an_ssl_listener_are_found(self):
        """An ssl: listener, an https probe URL and an https webhook are each named by their path."""
        data = {"admin": {"listen": "ssl:8443:privateKey=k.pem"},
                "processes": {"api": {"url": "HTTPS://api.example:443/health"}},
                "notifiers": [{"type": "log"}, {"type": "webhook", "url": "https://hooks.example/x"}]}
        assert tls.uses(data) == [("admin", "listen"), ("processes", "api", "url"), ("notifiers", 1, "url")]

    def test_commands_and_environments_are_not_ours(self):
        """An https URL a child is given (argv, environment) does not make the orchestrator load TLS."""
        data = {"processes": {"bot": {"command": ["bot", "--api", "https://api.telegram.org"],
                                      "environment": {"UPSTREAM": "https://x.example"}}}}
        assert tls.uses(data) == []


def _python(code: str, cwd: str) -> str:
    """
    Run C{code} in a fresh interpreter (with this checkout importable) and
    return what it printed; fail with its stderr if it failed.
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _write(directory, name: str, text: str) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return path


PLAIN = """
processes:
  api:
    command: ["/bin/sleep", "100"]
    url: "http://127.0.0.1:3000"
"""

WITH_HTTPS_WEBHOOK = PLAIN + """
notifiers:
  - {type: webhook, url: "https://hooks.example/x"}
"""


class TestLeavingOut:
    def test_plain_start_leaves_tls_out_and_a_reload_adding_https_is_refused(self, tmp_path):
        """A start without TLS imports no pyOpenSSL; a reload bringing in an https URL gets a located error and nothing else."""
        plain = _write(tmp_path, "plain.yaml", PLAIN)
        https = _write(tmp_path, "https.yaml", WITH_HTTPS_WEBHOOK)
        out = _python(f"""
            import sys
            from orchestrator.config.load import loadConfig
            from orchestrator.errors import ConfigError
            from orchestrator import tls
            loadConfig({plain!r}, envFile="/dev/null", leaveOutTLS=True)
            from twisted.internet import reactor, endpoints
            import twisted.web.client
            print("left out", tls.leftOut(), "cryptography" in sys.modules)
            try:
                loadConfig({https!r}, envFile="/dev/null")
            except ConfigError as e:
                print("refused", list(e.problems))
        """, os.getcwd())
        assert "left out True False" in out
        assert (f"refused ['{https}:8:26: notifiers[0].url: needs TLS, which this orchestrator left out "
                "at start because its configuration then used none; restart the orchestrator to load it "
                "(or set orchestrator.tls: always to load it at every start)']") in out

    @pytest.mark.parametrize("text", [WITH_HTTPS_WEBHOOK, PLAIN + "orchestrator: {tls: always}\n"])
    def test_tls_stays_when_used_or_asked_for(self, tmp_path, text):
        """An https URL at start, or orchestrator.tls: always, keeps TLS: the reactor offers it."""
        path = _write(tmp_path, "o.yaml", text)
        out = _python(f"""
            from orchestrator.config.load import loadConfig
            from orchestrator import tls
            loadConfig({path!r}, envFile="/dev/null", leaveOutTLS=True)
            from twisted.internet import reactor, ssl
            print("left out", tls.leftOut(), "available", tls.available())
        """, os.getcwd())
        assert "left out False available True" in out


def _mapped(pid: int, needle: str) -> bool:
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
        return needle in f.read()


@pytest.mark.integration
def test_twistd_runs_without_tls_and_refuses_a_reload_that_needs_it(run_orchestrator):
    """twistd orchestrator on http only maps no cryptography library, probes and serves; a SIGHUP adding an https webhook is rejected, the old configuration runs on."""
    orchestrator = run_orchestrator(BACKEND)
    orchestrator.waitHealthy(30)
    harness.waitFor(lambda: orchestrator.status()["status"] == "running", 30, what="running")
    assert "TLS left out" in orchestrator.log()
    assert not _mapped(orchestrator.process.pid, "cryptography")
    path = os.path.join(orchestrator.directory, "orchestrator.yaml")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + 'notifiers:\n  - {type: webhook, url: "https://hooks.example/x"}\n')
    orchestrator.signal(signal.SIGHUP)
    harness.waitFor(lambda: "reload rejected" in orchestrator.log(), 30, what="the reload to be refused")
    assert "notifiers[0].url: needs TLS, which this orchestrator left out at start" in orchestrator.log()
    assert orchestrator.status()["status"] == "running"
    assert not _mapped(orchestrator.process.pid, "cryptography")
