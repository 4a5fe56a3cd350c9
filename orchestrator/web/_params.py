"""
Reading a request's query and body, strictly: anything malformed is a 400
naming the parameter, never a silent default.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.web._render import ApiError

__all__ = ["BOOLEANS", "jsonObject", "queryBool", "queryChoice", "queryInt", "queryText"]

#: Accepted spellings of a boolean (as the configuration accepts them).
BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
            "false": False, "0": False, "no": False, "off": False}


def queryText(request, name: str) -> str | None:
    """
    The single value of query parameter C{name}, or C{None}.
    """
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(400, f"query parameter {name!r} given {len(values)} times")
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"query parameter {name!r} is not UTF-8")


def queryInt(request, name: str, default: int | None, minimum: int = 0,
             maximum: int | None = None) -> int | None:
    text = queryText(request, name)
    if text is None:
        return default
    try:
        value = int(text, 10)
    except ValueError:
        raise ApiError(400, f"query parameter {name!r} must be an integer, not {text!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(400, f"query parameter {name!r} must be {bounds}, not {value}")
    return value


def queryChoice(request, name: str, choices) -> str | None:
    """
    The value of query parameter C{name}, one of C{choices}, or C{None}:
    a parameter the OpenAPI document lists with an C{enum} is checked
    against it (an unknown value is a 400, not an empty answer).
    """
    text = queryText(request, name)
    if text is not None and text not in choices:
        raise ApiError(400, f"query parameter {name!r} must be one of {', '.join(choices)}, not {text!r}")
    return text


def queryBool(request, name: str, default: bool) -> bool:
    text = queryText(request, name)
    if text is None:
        return default
    try:
        return BOOLEANS[text.lower()]
    except KeyError:
        raise ApiError(400, f"query parameter {name!r} must be true or false, not {text!r}")


def jsonObject(request, fields: dict[str, type]) -> dict[str, Any]:
    """
    The request body: empty, or a JSON object whose keys are among
    C{fields} with values of their types.
    """
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}")
    except RecursionError:
        # (The site refuses deep nesting before any route; this is for a
        # request that reached a route some other way.)
        raise ApiError(400, "the request body nests JSON too deeply")
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    for key, value in body.items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ApiError(400, f"unknown field {key!r} in the request body (known: {known})")
        if not isinstance(value, fields[key]):
            raise ApiError(400, f"field {key!r} must be a {fields[key].__name__}")
    return body
