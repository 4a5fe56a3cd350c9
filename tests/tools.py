"""
Command-line tools some tests need (promtool, systemd-analyze), found on
PATH or fetched from their Debian package into the project's C{.cache/} by
C{.ci/fetch-deb-tool} (never installed system-wide); missing where that is
impossible, and then the test skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from unittest import SkipTest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache")

_attempts: dict[str, str] = {}


def debianTool(binary: str, package: str) -> str:
    """
    The path of C{binary}: on PATH, in C{.cache/bin}, or fetched now (once
    per run) from the Debian package C{package}.

    @raise SkipTest: with the fetcher's one-line reason when it cannot be had.
    """
    cached = os.path.join(CACHE, "bin", binary)
    path = shutil.which(binary) or (cached if os.access(cached, os.X_OK) else None)
    if path is None and binary not in _attempts:
        try:
            done = subprocess.run([os.path.join(ROOT, ".ci", "fetch-deb-tool"), package, binary],
                                  capture_output=True, text=True, timeout=900)
            _attempts[binary] = (done.stdout + done.stderr).strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            _attempts[binary] = f"{binary}: not fetched: {e}"
        path = cached if os.access(cached, os.X_OK) else None
    if path is None:
        raise SkipTest(_attempts.get(binary) or f"{binary}: not available")
    return path


#: The Compose Specification's JSON Schema ships in this package (Apache-2.0,
#: compose/config/compose_spec.json); it is downloaded, never installed.
COMPOSE_SCHEMA_PACKAGE = "docker-compose==1.29.2"


def composeSchema() -> dict:
    """
    The Compose Specification JSON Schema, from C{.cache/compose-spec/}, or
    fetched now with C{pip download --no-deps} (one line says so).

    @raise SkipTest: when the package index cannot be reached.
    """
    import glob
    import json
    import sys
    import zipfile

    folder = os.path.join(CACHE, "compose-spec")
    path = os.path.join(folder, "compose_spec.json")
    if not os.path.exists(path):
        os.makedirs(folder, exist_ok=True)
        try:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                   "--dest", folder, COMPOSE_SCHEMA_PACKAGE],
                                  capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SkipTest(f"compose schema: not fetched: {e}")
        wheels = glob.glob(os.path.join(folder, "docker_compose-*.whl"))
        if done.returncode != 0 or not wheels:
            raise SkipTest("compose schema: not fetched: pip download "
                           f"{COMPOSE_SCHEMA_PACKAGE} failed: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read("compose/config/compose_spec.json")
        with open(path, "wb") as f:
            f.write(data)
        os.remove(wheels[0])
        print(f"compose schema: fetched {os.path.basename(wheels[0])} with pip download into "
              f".cache/compose-spec (nothing installed)", file=sys.stderr)
    with open(path, encoding="utf-8") as f:
        return json.load(f)
