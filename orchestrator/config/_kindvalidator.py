"""
A JSON Schema validator that checks the kind-selected blocks of the master
schema (C{health}, C{restart}, each notifier: see
L{orchestrator.config.schema.masterSchema}) directly, with the same verdict
and the same errors as jsonschema's own keywords.

Such a block is C{allOf: [{if: {properties: {SELECTOR: {const: NAME}},
required: [SELECTOR]}, then: {properties, required}}, ...]} plus
C{unevaluatedProperties: false}.  jsonschema evaluates every C{if} (a
validator evolved per branch), and for C{unevaluatedProperties} validates
every branch again, fully, to learn which keys they evaluated: with 100
processes that was about 40% of loading the configuration.  Here the
selected branch is found by comparing the selector with each C{const}
(what C{const} does for a string), and an unknown key is one that is
neither a property of the block nor of its selected branch, which is also
how L{orchestrator.config._checks} words the error.  Any other shape of
C{allOf} or C{unevaluatedProperties} goes to jsonschema's own keyword.

Likewise C{properties} does not descend into a value whose subschema is a
plain leaf (type, enum, bounds, lengths, pattern, annotations) when the
value passes it, checked here as jsonschema checks it; a value that fails
is descended into, so every error is still jsonschema's own.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import jsonschema
from jsonschema import ValidationError, validators
from jsonschema._utils import extras_msg

from orchestrator.config._fastcheck import JSON_VALUES, TYPES

__all__ = ["KindValidator"]

_Base = jsonschema.Draft202012Validator
_allOf = _Base.VALIDATORS["allOf"]
_unevaluatedProperties = _Base.VALIDATORS["unevaluatedProperties"]

#: id of an C{allOf} list -> (the list, its branches or None); the list
#: is kept so its id cannot be reused by another one while cached.
_shapes: dict[int, tuple[list, list[tuple[str, str, dict]] | None]] = {}


def _kindBranches(allOf: Any) -> list[tuple[str, str, dict]] | None:
    """
    C{[(selector, name, then), ...]} when every entry of C{allOf} is a
    kind branch as L{masterSchema} builds it, else C{None}.
    """
    cached = _shapes.get(id(allOf))
    if cached is not None and cached[0] is allOf:
        return cached[1]
    branches: list[tuple[str, str, dict]] | None = []
    for branch in allOf if isinstance(allOf, list) else ():
        condition = branch.get("if") if isinstance(branch, dict) else None
        then = branch.get("then") if isinstance(branch, dict) else None
        if (set(branch) != {"if", "then"} or not isinstance(condition, dict) or not isinstance(then, dict)
                or set(condition) != {"properties", "required"} or len(condition["properties"]) != 1
                or not set(then) <= {"properties", "required"}):
            branches = None
            break
        ((selector, const),) = condition["properties"].items()
        if (condition["required"] != [selector] or not isinstance(const, dict) or set(const) != {"const"}
                or not isinstance(const["const"], str) or not isinstance(then.get("properties", {}), dict)):
            branches = None
            break
        branches.append((selector, const["const"], then))
    if not isinstance(allOf, list) or not allOf:
        branches = None
    if len(_shapes) >= 64:  # one master schema has three such lists; a reload makes new ones
        _shapes.clear()
    _shapes[id(allOf)] = (allOf, branches)
    return branches


def _selected(branches, instance: dict) -> Iterator[tuple[int, dict]]:
    for index, (selector, name, then) in enumerate(branches):
        # const with a string: plain equality, whatever the instance's type.
        if selector in instance and instance[selector] == name:
            yield index, then


def _kindAllOf(validator, allOf, instance, schema):
    branches = _kindBranches(allOf)
    if branches is None:
        yield from _allOf(validator, allOf, instance, schema)
        return
    if not isinstance(instance, dict):
        # Not an object: properties and required pass, so every if and
        # every then does.
        return
    for index, then in _selected(branches, instance):
        yield from validator.descend(instance, then, schema_path=index)


def _kindUnevaluated(validator, unevaluated, instance, schema):
    branches = _kindBranches(schema.get("allOf"))
    if unevaluated is not False or branches is None or not set(schema) <= _BLOCK_KEYWORDS \
            or not isinstance(schema.get("properties", {}), dict):
        yield from _unevaluatedProperties(validator, unevaluated, instance, schema)
        return
    if not isinstance(instance, dict):
        return
    known = set(schema.get("properties", ()))
    for _, then in _selected(branches, instance):
        known.update(then.get("properties", ()))
    extras = [key for key in instance if key not in known]
    if extras:
        yield ValidationError("Unevaluated properties are not allowed (%s %s unexpected)"
                              % extras_msg(sorted(extras, key=str)))


# -- leaves ------------------------------------------------------------------------------

#: Keywords that only annotate: they never fail.
_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment", "deprecated",
                          "readOnly", "writeOnly"})

#: JSON Schema type name -> jsonschema's 2020-12 type test, and the value
#: types a parsed configuration holds (anything else goes to jsonschema):
#: shared with L{orchestrator.config._fastcheck}.
_TYPES = TYPES
_PLAIN_VALUES = JSON_VALUES
_NUMBERS = (int, float)


def _leafChecks(schema: Any, formats) -> tuple | None:
    """
    The checks of a subschema made only of C{type}, C{enum}, bounds,
    lengths, C{pattern}, an unchecked C{format} and annotations, as
    C{(keyword, value)} pairs; C{None} for any other subschema.
    """
    if not isinstance(schema, dict):
        return None
    checks = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        if keyword == "format":
            if value in formats:  # a checked format: jsonschema's own
                return None
            continue
        if keyword == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(name in _TYPES for name in names):
                return None
            checks.append(("type", tuple(_TYPES[name] for name in names)))
        elif keyword == "enum" and isinstance(value, list):
            checks.append(("enum", value))
        elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") \
                and type(value) in _NUMBERS:
            checks.append((keyword, value))
        elif keyword in ("minLength", "maxLength") and type(value) is int:
            checks.append((keyword, value))
        elif keyword == "pattern" and isinstance(value, str):
            checks.append(("pattern", re.compile(value)))
        else:
            return None
    return tuple(checks)


def _passes(checks: tuple, value: Any) -> bool | None:
    """
    Whether C{value} passes every check, exactly as jsonschema decides;
    C{None} when it cannot be told here (jsonschema then decides).
    """
    if type(value) not in _PLAIN_VALUES:
        return None
    for keyword, expected in checks:
        if keyword == "type":
            if not any(test(value) for test in expected):
                return False
        elif keyword == "enum":
            # jsonschema's equal() is == for a string and identity for
            # null; other values (1 vs True...) are left to it.
            if type(value) is not str and value is not None:
                return None
            if value not in expected:
                return False
        elif keyword in ("minLength", "maxLength", "pattern"):
            if type(value) is str:
                if keyword == "minLength" and len(value) < expected:
                    return False
                if keyword == "maxLength" and len(value) > expected:
                    return False
                if keyword == "pattern" and not expected.search(value):
                    return False
        elif type(value) in _NUMBERS:  # bounds apply to numbers only (never to booleans)
            if keyword == "minimum" and value < expected:
                return False
            if keyword == "maximum" and value > expected:
                return False
            if keyword == "exclusiveMinimum" and value <= expected:
                return False
            if keyword == "exclusiveMaximum" and value >= expected:
                return False
    return True


_properties = _Base.VALIDATORS["properties"]

#: id of a subschema -> (the subschema, the formats checked, its leaf
#: checks or None), kept as L{_shapes} is.
_leaves: dict[int, tuple[Any, frozenset, tuple | None]] = {}


def _leafChecksOf(schema: Any, formats: frozenset) -> tuple | None:
    cached = _leaves.get(id(schema))
    if cached is not None and cached[0] is schema and cached[1] == formats:
        return cached[2]
    checks = _leafChecks(schema, formats)
    if len(_leaves) >= 4096:  # a master schema has a few hundred; a reload makes new ones
        _leaves.clear()
    _leaves[id(schema)] = (schema, formats, checks)
    return checks


def _plainProperties(validator, properties, instance, schema):
    """
    jsonschema's C{properties}, but a value whose subschema is a plain
    leaf (L{_leafChecks}) and that passes it is not descended into: about
    6000 values for 100 processes, each a validator evolved and its
    keywords looked up.  A value that fails, or that cannot be told here,
    is descended into as before, so the errors are jsonschema's own.
    """
    if not isinstance(properties, dict):
        yield from _properties(validator, properties, instance, schema)
        return
    if not isinstance(instance, dict):  # what is_type(instance, "object") says
        return
    checker = validator.format_checker
    formats = frozenset(checker.checkers) if checker is not None else frozenset()
    for name, subschema in properties.items():
        if name not in instance:
            continue
        value = instance[name]
        checks = _leafChecksOf(subschema, formats)
        if checks is not None and _passes(checks, value) is True:
            continue
        yield from validator.descend(value, subschema, path=name, schema_path=name)


#: The keywords a kind-selected block may have for the direct check: none
#: of them evaluates properties but C{properties} and C{allOf}.
_BLOCK_KEYWORDS = {"type", "properties", "required", "allOf", "unevaluatedProperties",
                   "description", "title", "default", "examples", "$comment"}

KindValidator = validators.extend(_Base, {"allOf": _kindAllOf,
                                          "unevaluatedProperties": _kindUnevaluated,
                                          "properties": _plainProperties})
