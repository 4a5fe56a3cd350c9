"""
Packaging: the wheel installs everything twistd needs, and the default
configuration runs under real twistd.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from tests import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_installs_twistd_plugin(tmp_path):
    """A wheel built from the checkout, installed in a fresh venv, gives `twistd orchestrator` outside the checkout."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), ROOT],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = glob.glob(str(dist / "txorchestrator-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run(pip + ["install", "--quiet", wheel], check=True, capture_output=True, timeout=900)
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    assert os.path.exists(os.path.join(site, "twisted", "plugins", "orchestrator_plugin.py"))
    assert not os.path.exists(os.path.join(site, "twisted", "plugins", "__init__.py")) or \
        os.path.getsize(os.path.join(site, "twisted", "plugins", "__init__.py")) > 0  # Twisted's own
    assert os.path.exists(os.path.join(site, "orchestrator", "config", "schema.json"))
    for asset in ("index.html", "app.js", "app.css", "favicon.svg"):  # the status page
        assert os.path.getsize(os.path.join(site, "orchestrator", "web", "static", asset)) > 0, asset
    assert os.path.exists(os.path.join(site, "orchestrator", "builtin", "probes.py"))
    assert not os.path.exists(os.path.join(site, "plugins"))  # never a top-level "plugins" package
    outside = str(tmp_path)
    listed = subprocess.run([str(venv / "bin" / "twistd"), "--help"], cwd=outside,
                            capture_output=True, text=True, timeout=120)
    assert any(line.split()[:1] == ["orchestrator"] for line in listed.stdout.splitlines()), listed.stdout
    options = subprocess.run([str(venv / "bin" / "twistd"), "orchestrator", "--help"], cwd=outside,
                             capture_output=True, text=True, timeout=120)
    assert "--config" in options.stdout and "--env-file" in options.stdout and "--listen" in options.stdout
    reference = subprocess.run([str(venv / "bin" / "orchestrator"), "config-reference"], cwd=outside,
                               capture_output=True, text=True, timeout=120)
    assert "`processes.NAME.health.interval`" in reference.stdout


@pytest.mark.integration
def test_default_config_serves_seed_health(tmp_path):
    """twistd -n orchestrator on the shipped default config serves the seed's health route and supervises the demo backend."""
    adminPort, backendPort = harness.freePort(), harness.freePort()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR")}
    env["ORCHESTRATOR__PROCESSES__BACKEND__ENV__PORT"] = str(backendPort)
    env["GO_BACKEND_URL"] = f"http://127.0.0.1:{backendPort}"
    command = [harness.TWISTD, "-n", "--pidfile=", "orchestrator",
               "--config", os.path.join(ROOT, "conf", "orchestrator.yaml"), "--env-file", os.devnull,
               "--listen", f"tcp:{adminPort}:interface=127.0.0.1"]
    log = open(tmp_path / "twistd.log", "wb")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def health():
            try:
                return harness.getJSON(f"http://127.0.0.1:{adminPort}/api/v1/admin/backend/health", timeout=2)
            except OSError:
                return None

        status, body = harness.waitFor(
            lambda: (lambda r: r if r and r[1]["backend_status"] == "running" else None)(health()),
            30, what="the backend to be running")
        assert status == 200
        seed = {"orchestrator_enabled": True, "backend_status": "running",
                "health_check_interval": 30, "auto_restart": True, "max_restart_attempts": 3}
        assert {k: body[k] for k in seed} == seed  # extra fields are allowed, never fewer
        assert type(body["health_check_interval"]) is int  # the seed's JSON type
        backend = harness.getJSON(f"http://127.0.0.1:{backendPort}/health", timeout=5)[1]
        assert harness.pidAlive(backend["pid"])
        process.terminate()
        assert process.wait(30) == 0
        assert not harness.pidAlive(backend["pid"])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def test_example_plugin_requires_our_distribution():
    """The example plugin's install_requires names this project's distribution (txorchestrator), not the other "orchestrator" on the index."""
    import configparser

    ours = configparser.ConfigParser()
    ours.read(os.path.join(ROOT, "setup.cfg"))
    example = configparser.ConfigParser()
    example.read(os.path.join(ROOT, "examples", "notifier_plugin", "setup.cfg"))
    name = ours["metadata"]["name"]
    assert name == "txorchestrator"
    assert example["options"]["install_requires"].split() == [name]
