"""
The direct check of kind-selected blocks (L{orchestrator.config._kindvalidator})
reports exactly what jsonschema's own C{allOf}/C{if}/C{unevaluatedProperties}
report, for valid and invalid configurations alike.
"""

from __future__ import annotations

import jsonschema
import pytest

from orchestrator.config import _checks, _kindvalidator
from orchestrator.config._kindvalidator import KindValidator
from orchestrator.errors import ConfigError
from tests.test_config import load

_PROCESS = """\
processes:
  backend:
    command: ["{{python}}", "-c", "pass"]
    url: "http://127.0.0.1:3000"
{block}
"""

DOCUMENTS = {
    "valid, every kind": _PROCESS.format(block="""\
    health: {probe: http, path: /ready, interval: 2}
    restart: {policy: backoff, backoff: {initial: 0.5}}
  worker:
    command: ["{python}", "-c", "pass"]
    health: {probe: exec, command: ["true"]}
    restart: {policy: always}
notifiers:
  - {type: log}
  - {type: webhook, url: "https://example.com/hook", events: [crashed]}
"""),
    "a typo in a plugin option": _PROCESS.format(block="    health: {probe: http, pth: /x}"),
    "another kind's option": _PROCESS.format(block="    health: {probe: tcp, path: /x, port: 80}"),
    "a bad value and an unknown key": _PROCESS.format(block="    health: {probe: http, path: 5, bogus: 1}"),
    "an option of the defaulted kind, mistyped": _PROCESS.format(
        block="    restart: {backoff: {initial: -1}, max_atempts: 2}"),
    "an unknown kind with options": _PROCESS.format(block="    health: {probe: nope, path: /x}"),
    "a block that is not a mapping": _PROCESS.format(block="    health: fast"),
    "a selector that is not a string": _PROCESS.format(block="    health: {probe: 3, path: /x}"),
    "a kind's required option missing": _PROCESS.format(block="""\
notifiers:
  - {type: webhook, events: [crashed], extra: 1}
  - {type: log, url: "https://example.com"}
  - 7
"""),
    "a policy option of another policy": _PROCESS.format(block="    restart: {policy: never, backoff: {}}"),
    "leaf values of every wrong kind": _PROCESS.format(block="""\
    health: {probe: http, interval: true, timeout: -1, failure_threshold: 2.5, path: 7}
    restart: {max_attempts: "3", delay: null, success_exit_codes: [0, "x"], backoff: {factor: 0}}
    stop: {signal: NOPE, timeout: "5 parsecs"}
    log: {max_bytes: 1.0, lines: 0, echo: "yes"}
logging: {level: true, format: 1}
"""),
}


def _outcome(text: str, tmp_path) -> tuple:
    try:
        load(text.replace("{python}", "/bin/true"), tmp_path=tmp_path)
    except ConfigError as e:
        return tuple(e.problems)
    return ()


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_same_problems_as_jsonschema(name, tmp_path, monkeypatch):
    """Each configuration gets the very same problems (or none) from the direct check as from jsonschema's own keywords."""
    direct = _outcome(DOCUMENTS[name], tmp_path)
    # The reference: jsonschema alone (no fast check, its own keywords).
    monkeypatch.setattr(_kindvalidator, "KindValidator", jsonschema.Draft202012Validator)
    monkeypatch.setattr(_checks, "surelyValid", lambda *args: False)
    reference = _outcome(DOCUMENTS[name], tmp_path)
    assert direct == reference
    assert bool(direct) is not name.startswith("valid")


def test_other_shapes_use_jsonschema():
    """allOf and unevaluatedProperties of any other shape keep jsonschema's meaning."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}},
              "allOf": [{"required": ["a"]}, {"if": {"properties": {"a": {"const": 1}}},
                                              "then": {"properties": {"b": {"type": "string"}}}}],
              "unevaluatedProperties": False}
    errors = sorted(e.message for e in KindValidator(schema).iter_errors({"a": 1, "b": 2, "c": 3}))
    reference = sorted(e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(
        {"a": 1, "b": 2, "c": 3}))
    assert errors == reference and errors


_LEAVES = [
    {"type": "integer"}, {"type": "number", "minimum": 0},
    {"type": ["number", "string"], "exclusiveMinimum": 0},
    {"type": "integer", "maximum": 3, "exclusiveMaximum": 3.5}, {"type": "boolean"},
    {"type": ["string", "null"]}, {"enum": ["a", "b", None]}, {"enum": [0, 1]},
    {"type": "string", "minLength": 1, "maxLength": 3}, {"type": "string", "pattern": "^[0-9]+(ms|s)$"},
    {"type": "object"}, {"type": "array"}, {"minimum": 1, "description": "bounds alone"},
    {"format": "duration", "type": "number"},
]
_VALUES = [0, 1, 3, -1, 1.0, 1.5, 3.25, float("nan"), float("inf"), True, False, None, "", "a", "abcd",
           "10ms", "x10s", [], [1], {}, {"a": 1}]


@pytest.mark.parametrize("leaf", _LEAVES, ids=lambda leaf: str(sorted(leaf.items())))
def test_leaf_checks_decide_as_jsonschema(leaf):
    """A plain leaf's direct check (the fast check's) passes exactly the values jsonschema passes (or defers to it)."""
    from orchestrator.config._fastcheck import _check

    verdicts = {repr(value): (value, _check(leaf, value, leaf, {})) for value in _VALUES}
    assert any(verdict is not None for _, verdict in verdicts.values()), leaf
    for value, verdict in verdicts.values():
        if verdict is not None:
            assert verdict == jsonschema.Draft202012Validator(leaf).is_valid(value), (leaf, value)
