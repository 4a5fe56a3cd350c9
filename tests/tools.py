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


#: The Compose Specification's JSON Schema, vendored with its licence and
#: source noted in tests/vendor/README.md (one copy for every test).
COMPOSE_SCHEMA = os.path.join(ROOT, "tests", "vendor", "compose-spec.json")


def composeSchema() -> dict:
    """
    The Compose Specification JSON Schema (the vendored copy).
    """
    import json

    with open(COMPOSE_SCHEMA, encoding="utf-8") as f:
        return json.load(f)


def composeValidator():
    """
    A validator for the Compose Specification (JSON Schema draft 7, which
    its C{$schema} names without the trailing C{#} jsonschema looks up).
    """
    import jsonschema

    return jsonschema.Draft7Validator(composeSchema())
