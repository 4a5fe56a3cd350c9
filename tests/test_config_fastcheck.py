"""
Tests for L{orchestrator.config._fastcheck}: it accepts the valid
configurations people write without importing jsonschema, and it never
accepts a document jsonschema refuses (compared on thousands of seeded
mutations of real documents).
"""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys
import textwrap

import pytest

from orchestrator.config import load as _load
from orchestrator.config._checks import _FORMATS, _formatChecker
from orchestrator.config._fastcheck import surelyValid
from orchestrator.config._kindvalidator import KindValidator
from orchestrator.config.load import loadConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Every kind of block and most keys: the documents the mutations start from.
KITCHEN_SINK = """
orchestrator: {enabled: true, tls: auto}
admin:
  listen: "tcp:{port}:interface=127.0.0.1"
  token: "s3cret-token-of-enough-length"
logging: {level: info, format: json}
processes:
  api:
    command: ["/bin/sleep", "60"]
    url: "http://127.0.0.1:3000"
    env: {MODE: prod}
    working_dir: "/tmp"
    health: {probe: http, interval: 30, timeout: 5, path: /health, expect_status: [200, "300-399"]}
    restart: {policy: backoff, max_attempts: 5, backoff: {initial: 1, max: 30}}
    stop: {signal: TERM, timeout: 10}
    depends_on: {db: {condition: healthy}}
    groups: [web]
    max_memory: 512MiB
    log: {lines: 500, echo_rate: 50}
  db:
    command: ["/bin/sleep", "61"]
    health: {probe: tcp, port: 5432, interval: 10}
    restart: {policy: always}
    rlimits: {nofile: {soft: 100, hard: 200}, core: unlimited}
    umask: "022"
  worker:
    command: ["/bin/sleep", "62"]
    replicas: 3
    port: 4000
    health: {probe: exec, command: ["/bin/true"], interval: 5}
    restart: {policy: on-failure, max_attempts: 3}
    autostart: false
notifiers:
  - {type: log}
  - {type: webhook, url: "http://127.0.0.1:9/hook", events: [crashed, gave_up]}
  - {type: prometheus}
"""


def _capture(text: str, tmp_path) -> tuple[dict, dict]:
    """
    The master schema and the merged document loadConfig validates for
    C{text}.
    """
    path = tmp_path / "orchestrator.yaml"
    path.write_text(text.replace("{port}", "18999"))
    seen = []
    original = _load.validateSchema

    def recording(schema, data, problems):
        seen.append((schema, copy.deepcopy(data)))
        return original(schema, data, problems)

    _load.validateSchema = recording
    try:
        loadConfig(str(path), envFile=os.devnull, environ={}, entryPoints=False, checkExecutables=False)
    finally:
        _load.validateSchema = original
    return seen[0]


def _errors(schema: dict, data) -> list:
    return list(KindValidator(schema, format_checker=_formatChecker()).iter_errors(data))


@pytest.fixture
def documents(tmp_path):
    with open(os.path.join(ROOT, "conf", "orchestrator.yaml"), encoding="utf-8") as f:
        shipped = f.read()
    return [_capture(KITCHEN_SINK, tmp_path), _capture(shipped, tmp_path)]


def test_valid_configurations_need_no_jsonschema(documents):
    """The shipped configuration and one using every kind are surely valid: jsonschema is not asked."""
    for schema, data in documents:
        assert _errors(schema, data) == []
        assert surelyValid(schema, data, _FORMATS)


_VALUES = [-1, 0, 1, 2.5, float("nan"), 10**12, True, False, None, "", "x", "30s", "TERM",
           "http://127.0.0.1:1/x", "ftp://host/x", "http://", [], ["a"], ["a", "a"], [1], {}, {"k": 1},
           {"probe": "http"}, {"policy": "never"}, {"type": "log"}, {"condition": "started"}]


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, path + (index,))


def _mutate(data, rng: random.Random):
    data = copy.deepcopy(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        path = rng.choice([p for p in _paths(data) if p])
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = rng.random()
        if action < 0.6:
            parent[key] = copy.deepcopy(rng.choice(_VALUES))
        elif action < 0.75 and isinstance(parent, dict):
            del parent[key]
        elif action < 0.9 and isinstance(parent, dict):
            parent[rng.choice(["extra", "probe", "policy", "type", "url", "interval", "path", "port",
                               "command", "unknown_key"])] = copy.deepcopy(rng.choice(_VALUES))
        elif isinstance(parent[key], dict) and parent[key]:
            # A kind switched under options of another kind.
            parent[key][rng.choice(["probe", "policy", "type"])] = rng.choice(
                ["http", "tcp", "exec", "always", "never", "on-failure", "backoff", "log", "webhook",
                 "prometheus", "nosuch"])
    return data


def test_never_accepts_what_jsonschema_refuses(documents):
    """3000 seeded mutations: surelyValid is never true for a document with a jsonschema error, and stays useful for the valid ones."""
    rng = random.Random(20261202)
    refused = accepted = validOnes = 0
    for attempt in range(3000):
        schema, data = documents[attempt % len(documents)]
        mutated = _mutate(data, rng)
        errors = _errors(schema, mutated)
        fast = surelyValid(schema, mutated, _FORMATS)
        assert not (fast and errors), (mutated, [e.message for e in errors])
        refused += bool(errors)
        if not errors:
            validOnes += 1
            accepted += fast
    assert refused > 1000  # the mutations do make invalid documents
    assert validOnes > 100 and accepted / validOnes > 0.8  # and most valid ones skip jsonschema


def test_keywords_and_values_it_cannot_judge_go_to_jsonschema():
    """An unknown keyword, a non-JSON value or a non-string key: unsure, so not surely valid."""
    assert not surelyValid({"not": {"type": "string"}}, 1, {})
    assert not surelyValid({"type": "string"}, b"bytes", {})
    assert not surelyValid({"type": "object"}, {1: "a"}, {})
    assert not surelyValid({"enum": [[1]]}, [1], {})
    assert surelyValid({"type": "integer", "minimum": 0}, 3.0, {})
    assert not surelyValid({"const": 1}, True, {})
    assert not surelyValid({"type": "number"}, True, {})


def test_a_start_imports_no_jsonschema(tmp_path):
    """Loading the shipped configuration (what twistd orchestrator does) leaves jsonschema unimported; an invalid one still gets jsonschema's words."""
    script = textwrap.dedent(f"""
        import sys
        from orchestrator.config.load import loadConfig
        from orchestrator.errors import ConfigError
        loadConfig({os.path.join(ROOT, "conf", "orchestrator.yaml")!r}, envFile="/dev/null")
        print("after a valid load", "jsonschema" in sys.modules)
        try:
            loadConfig({str(tmp_path / "bad.yaml")!r}, envFile="/dev/null")
        except ConfigError as e:
            print("problems", e.problems)
        print("after an invalid load", "jsonschema" in sys.modules)
    """)
    (tmp_path / "bad.yaml").write_text("processes:\n  api: {command: ['/bin/true'], restart: {policy: 7}}\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "after a valid load False" in out.stdout
    assert "after an invalid load True" in out.stdout
    assert "processes.api.restart.policy" in out.stdout
