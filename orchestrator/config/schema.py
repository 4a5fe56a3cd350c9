"""
The master JSON Schema: the packaged base schema plus the options of every
registered probe, restart policy and notifier kind.

Each kind's C{config_schema} describes its own keys inside the block that
selects it (C{health.probe}, C{restart.policy}, a notifier's C{type}).  We
merge them with C{if}/C{then} branches and C{unevaluatedProperties: false},
so a typo in a plugin's option is caught exactly like a typo in a core key.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from collections.abc import Mapping  # (typing's isinstance is 10x slower)
from typing import Any, Iterator

from orchestrator.config._durations import DURATION_PATTERN, isDuration

__all__ = ["baseSchema", "masterSchema", "schemaAt", "fillDefaults", "selectedBranches"]

#: block definition name in $defs -> (selector key, Kinds attribute)
_SELECTORS = {
    "health": ("probe", "probes"),
    "restart": ("policy", "policies"),
    "notifier": ("type", "notifiers"),
}


def baseSchema() -> dict:
    """
    Load the schema shipped as package data (C{conf/} is not installed).
    """
    text = resources.files("orchestrator.config").joinpath("schema.json").read_text("utf-8")
    return json.loads(text)


def masterSchema(kinds) -> dict:
    """
    Build the schema that validates a configuration for these kinds.

    @param kinds: a L{orchestrator.hooks.manager.Kinds}.
    """
    schema = baseSchema()
    for defName, (selector, attr) in _SELECTORS.items():
        block = schema["$defs"][defName]
        registered: Mapping[str, Any] = getattr(kinds, attr)
        names = sorted(registered)
        if defName == "health":
            block["properties"][selector] = {
                **block["properties"][selector],
                "enum": names + ["none", None],
            }
        else:
            block["properties"][selector] = {
                **block["properties"][selector],
                "enum": names,
            }
        block["allOf"] = [
            {
                "if": {"properties": {selector: {"const": name}}, "required": [selector]},
                "then": {
                    "properties": copy.deepcopy(
                        registered[name].config_schema.get("properties", {})
                    ),
                    **(
                        {"required": list(registered[name].config_schema["required"])}
                        if registered[name].config_schema.get("required")
                        else {}
                    ),
                },
            }
            for name in names
        ]
        block["unevaluatedProperties"] = False
    _widenDurations(schema)
    return schema


def _widenDurations(node: Any) -> None:
    """
    Let every C{"format": "duration"} key (core or plugin) take Go-style
    strings as well as seconds: C{500ms}, C{30s}, C{1m30s}.  The loader
    converts them to seconds before validating, so C{minimum} applies.
    """
    if isinstance(node, dict):
        if isDuration(node):
            node.setdefault("type", ["number", "string"])
            node.setdefault("pattern", DURATION_PATTERN)
        for value in node.values():
            _widenDurations(value)
    elif isinstance(node, list):
        for value in node:
            _widenDurations(value)


def _resolve(root: dict, node: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def selectedBranches(root: dict, node: dict, value: Any) -> Iterator[dict]:
    """
    Yield the C{then} branches of C{node} whose C{if} selector matches
    C{value} (a mapping), i.e. the options of the selected kind.
    """
    if not isinstance(value, Mapping):
        return
    for branch in node.get("allOf", ()):
        cond = branch.get("if", {}).get("properties", {})
        if all(k in value and value[k] == c.get("const") for k, c in cond.items()):
            yield _resolve(root, branch["then"])


def schemaAt(root: dict, path: tuple, data: Any = None) -> dict | None:
    """
    Find the schema of the value at a JSON path.

    @param data: the configuration being built, used to pick the selected
        kind's options; when a kind is not selected yet, every kind's
        options are searched.
    @return: the schema, or C{None} if no such path exists.
    """
    node = _resolve(root, root)
    for key in path:
        if isinstance(data, Mapping):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and key < len(data):
            data = data[key]
        else:
            data = None
        node = _child(root, node, key, data)
        if node is None:
            return None
    return node


def _child(root: dict, node: dict, key, childData) -> dict | None:
    if isinstance(key, int):
        items = node.get("items")
        return _resolve(root, items) if isinstance(items, dict) else None
    props = node.get("properties", {})
    if key in props:
        return _resolve(root, props[key])
    for branch in node.get("allOf", ()):
        then = _resolve(root, branch.get("then", {}))
        if key in then.get("properties", {}):
            return _resolve(root, then["properties"][key])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return _resolve(root, extra)
    return None


def fillDefaults(root: dict, node: dict, value: Any, path: tuple, filled: list) -> Any:
    """
    Fill schema defaults into C{value} in place, recursively, including the
    options of the selected kinds.

    @param filled: receives the JSON path of every default filled in.
    @return: C{value}.
    """
    node = _resolve(root, node)
    if isinstance(value, dict):
        _fillProperties(root, node.get("properties", {}), value, path, filled)
        # Only now is a defaulted selector (restart.policy: backoff) in
        # place to pick the kind whose option defaults come next.
        for branch in selectedBranches(root, node, value):
            _fillProperties(root, branch.get("properties", {}), value, path, filled)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            known = set(node.get("properties", {}))
            for key in value:
                if key not in known:
                    fillDefaults(root, extra, value[key], path + (key,), filled)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            fillDefaults(root, node["items"], item, path + (i,), filled)
    return value


def _fillProperties(root: dict, props: dict, value: dict, path: tuple, filled: list):
    for key, sub in props.items():
        sub = _resolve(root, sub)
        if key not in value and "default" in sub:
            value[key] = _copy(sub["default"])
            filled.append(path + (key,))
        if key in value:
            fillDefaults(root, sub, value[key], path + (key,), filled)


def _copy(value: Any) -> Any:
    """
    A deep copy of a default: JSON values directly (C{copy.deepcopy} was a
    third of filling the defaults of 100 processes), anything else by
    C{deepcopy}.
    """
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if value is None or type(value) in (str, int, float, bool):
        return value
    return copy.deepcopy(value)
