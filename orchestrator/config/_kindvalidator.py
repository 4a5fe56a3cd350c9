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

Only a document L{orchestrator.config._fastcheck} could not accept comes
here (an invalid one, mostly): the valid ones never import jsonschema.
"""

from __future__ import annotations

from typing import Any, Iterator

import jsonschema
from jsonschema import ValidationError, validators
from jsonschema._utils import extras_msg

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


#: The keywords a kind-selected block may have for the direct check: none
#: of them evaluates properties but C{properties} and C{allOf}.
_BLOCK_KEYWORDS = {"type", "properties", "required", "allOf", "unevaluatedProperties",
                   "description", "title", "default", "examples", "$comment"}

KindValidator = validators.extend(_Base, {"allOf": _kindAllOf,
                                          "unevaluatedProperties": _kindUnevaluated})
