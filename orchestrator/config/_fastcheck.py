"""
Telling that a configuration is valid without importing jsonschema.

Almost every configuration loaded is valid, and jsonschema with its
referencing stack is the heaviest import of a start (about 28 ms and 3 MiB
on the machine of C{bench/}) and of every reload.  This module checks the
keywords the master schema is made of (L{orchestrator.config.schema}: the
types, bounds, lengths, patterns, C{enum}/C{const}, C{properties},
C{additionalProperties}, C{propertyNames}, C{items}, C{anyOf}, C{allOf}
with C{if}/C{then}/C{else}, local C{$ref}s and the kind blocks'
C{unevaluatedProperties: false}) exactly as jsonschema's Draft 2020-12
validator does, and answers only "surely valid".  Anything else (a
keyword not listed, a value type a YAML file can hold but JSON cannot, an
C{enum} of lists) is "unsure", and unsure or invalid alike go to
jsonschema, which then finds and words every error.  So this can only make
a valid document cheaper; it can never accept one jsonschema refuses
(C{tests/test_config_fastcheck.py} compares the two on mutated documents).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

__all__ = ["surelyValid"]

#: Keywords that never fail.
_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment", "deprecated",
                          "readOnly", "writeOnly", "$schema", "$id", "$defs"})

#: Keywords a kind block (C{unevaluatedProperties: false}) may have for
#: its evaluated properties to be known here.
_BLOCK = frozenset({"type", "properties", "required", "allOf", "unevaluatedProperties"}) | _ANNOTATIONS

_NUMBER = (int, float)

#: JSON Schema type name -> the test jsonschema's 2020-12 type checker
#: makes, for the value types a parsed configuration holds.
_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: type(v) is str,
    "integer": lambda v: type(v) is int or (type(v) is float and v.is_integer()),
    "number": lambda v: type(v) is int or type(v) is float,
    "boolean": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
}

#: The value types a JSON document holds; anything else (a date YAML
#: parsed, bytes) is left to jsonschema.
_JSON_VALUES = (str, int, float, bool, type(None), dict, list)

_patterns: dict[str, re.Pattern] = {}

Verdict = bool | None  # True valid, False invalid, None unsure


def surelyValid(schema: dict, data: Any, formats: Mapping[str, Callable[[Any], Any]]) -> bool:
    """
    Whether C{data} is valid against C{schema}, when this module can tell
    for certain; C{False} means invalid or unsure (ask jsonschema).

    @param formats: the formats checked, name -> a function raising
        C{ValueError} for a bad value (what the format checker given to
        jsonschema checks; other formats only annotate).
    """
    return _check(schema, data, schema, formats) is True


def _all(verdicts) -> Verdict:
    unsure = False
    for verdict in verdicts:
        if verdict is False:
            return False
        if verdict is None:
            unsure = True
    return None if unsure else True


def _check(schema: Any, value: Any, root: dict, formats) -> Verdict:
    if schema is True:
        return True
    if schema is False:
        return False
    if not isinstance(schema, dict) or type(value) not in _JSON_VALUES:
        return None
    if type(value) is dict and not all(type(name) is str for name in value):
        return None  # a YAML key that is not a string: jsonschema words it
    unsure = False
    for keyword, expected in schema.items():
        if keyword in _ANNOTATIONS or keyword in ("then", "else"):
            continue  # checked with their if
        verdict = _keyword(keyword, expected, schema, value, root, formats)
        if verdict is False:
            return False
        if verdict is None:
            unsure = True
    return None if unsure else True


def _keyword(keyword: str, expected: Any, schema: dict, value: Any, root: dict, formats) -> Verdict:
    kind = type(value)
    if keyword == "type":
        names = [expected] if isinstance(expected, str) else expected
        if not isinstance(names, list) or not all(name in _TYPES for name in names):
            return None
        return any(_TYPES[name](value) for name in names)
    if keyword == "enum":
        if not isinstance(expected, list):
            return None
        verdicts = [_equal(value, each) for each in expected]
        return True if True in verdicts else None if None in verdicts else False
    if keyword == "const":
        return _equal(value, expected)
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if type(expected) not in _NUMBER:
            return None
        if kind not in _NUMBER:
            return True  # bounds apply to numbers only, never to booleans
        # The same comparisons as jsonschema (so NaN passes, as there).
        return not {"minimum": value < expected, "maximum": value > expected,
                    "exclusiveMinimum": value <= expected, "exclusiveMaximum": value >= expected}[keyword]
    if keyword in ("minLength", "maxLength", "pattern"):
        if kind is not str:
            return True
        if keyword == "pattern":
            return None if not isinstance(expected, str) else _search(expected, value)
        if type(expected) is not int:
            return None
        return len(value) >= expected if keyword == "minLength" else len(value) <= expected
    if keyword == "format":
        check = formats.get(expected) if isinstance(expected, str) else None
        if check is None:
            return True  # not a checked format: an annotation
        try:
            return bool(check(value))
        except ValueError:
            return False
    if keyword in ("minItems", "maxItems"):
        if kind is not list:
            return True
        if type(expected) is not int:
            return None
        return len(value) >= expected if keyword == "minItems" else len(value) <= expected
    if keyword == "uniqueItems":
        if kind is not list or expected is not True or len(value) < 2:
            return True if expected in (True, False) else None
        if not all(type(item) is str for item in value):
            return None
        return len(set(value)) == len(value)
    if keyword == "required":
        if kind is not dict:
            return True
        if not isinstance(expected, list):
            return None
        return all(name in value for name in expected)
    if keyword == "properties":
        if kind is not dict:
            return True
        if not isinstance(expected, dict):
            return None
        return _all(_check(sub, value[name], root, formats)
                    for name, sub in expected.items() if name in value)
    if keyword == "patternProperties":
        if kind is not dict:
            return True
        if not isinstance(expected, dict):
            return None
        return _all(_check(sub, item, root, formats)
                    for pattern, sub in expected.items()
                    for name, item in value.items() if _search(pattern, name))
    if keyword == "additionalProperties":
        if kind is not dict:
            return True
        known = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        if not isinstance(known, dict) or not isinstance(patterns, dict):
            return None
        return _all(_check(expected, item, root, formats) for name, item in value.items()
                    if name not in known and not any(_search(pattern, name) for pattern in patterns))
    if keyword == "propertyNames":
        if kind is not dict:
            return True
        return _all(_check(expected, name, root, formats) for name in value)
    if keyword == "items":
        if kind is not list:
            return True
        if not isinstance(expected, (dict, bool)) or "prefixItems" in schema:
            return None
        return _all(_check(expected, item, root, formats) for item in value)
    if keyword == "anyOf":
        if not isinstance(expected, list) or not expected:
            return None
        verdicts = [_check(sub, value, root, formats) for sub in expected]
        return True if True in verdicts else None if None in verdicts else False
    if keyword == "allOf":
        if not isinstance(expected, list) or not expected:
            return None
        return _all(_check(sub, value, root, formats) for sub in expected)
    if keyword == "if":
        condition = _check(expected, value, root, formats)
        if condition is None:
            return None
        branch = schema.get("then" if condition else "else", True)
        return _check(branch, value, root, formats)
    if keyword == "$ref":
        target = _local(root, expected)
        return None if target is None else _check(target, value, root, formats)
    if keyword == "unevaluatedProperties":
        return _unevaluated(expected, schema, value, root, formats)
    return None  # a keyword not checked here


def _search(pattern: str, text: str) -> bool:
    compiled = _patterns.get(pattern)
    if compiled is None:
        if len(_patterns) >= 256:  # a schema has a handful; plugins may add some
            _patterns.clear()
        compiled = _patterns[pattern] = re.compile(pattern)
    return compiled.search(text) is not None


def _equal(value: Any, expected: Any) -> Verdict:
    """
    jsonschema's C{equal} for the scalars a configuration holds: a string
    only equals a string, C{True} never equals C{1}, C{1} equals C{1.0}.
    """
    if type(value) in (dict, list) or type(expected) in (dict, list):
        return None
    if type(value) is str or type(expected) is str:
        return value == expected
    if type(value) is bool or type(expected) is bool:
        return type(value) is type(expected) and value == expected
    if value is None or expected is None:
        return value is expected
    return value == expected


def _local(root: dict, reference: Any) -> Any:
    if not isinstance(reference, str) or not reference.startswith("#/$defs/"):
        return None
    name = reference[len("#/$defs/"):]
    if "/" in name or "~" in name or "%" in name:
        return None
    return root.get("$defs", {}).get(name)


def _unevaluated(unevaluated: Any, schema: dict, value: Any, root: dict, formats) -> Verdict:
    """
    C{unevaluatedProperties: false} of a block whose properties can only
    be evaluated by its own C{properties} and by the C{if}/C{then}
    branches of its C{allOf} whose condition holds (the kind blocks of
    L{orchestrator.config.schema.masterSchema}).
    """
    if type(value) is not dict:
        return True
    if unevaluated is not False or not set(schema) <= _BLOCK or not isinstance(schema.get("properties", {}), dict):
        return None
    known = set(schema.get("properties", {}))
    for branch in schema.get("allOf", ()):
        if not isinstance(branch, dict) or not set(branch) <= {"if", "then"} | _ANNOTATIONS:
            return None
        condition, then = branch.get("if", {}), branch.get("then", {})
        for part in (condition, then):
            if not isinstance(part, dict) or not set(part) <= {"properties", "required"} | _ANNOTATIONS \
                    or not isinstance(part.get("properties", {}), dict):
                return None
        holds = _check(condition, value, root, formats)
        if holds is None:
            return None
        if holds:
            known.update(condition.get("properties", ()))
            known.update(then.get("properties", ()))
    return all(name in known for name in value)
