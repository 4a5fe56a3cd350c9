"""
The OpenAPI document describes the API exactly as served: it is a valid
OpenAPI 3.2 document, every route is in it with exactly its methods, and
every real answer validates against its schemas (the L{ApiHarness} checks
each answer any API test receives; here every documented operation is
called at least once).
"""

from __future__ import annotations

import pytest
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS31Validator

from orchestrator.web import api as routes
from orchestrator.web._render import ApiResource
from orchestrator.web.openapi import openAPIDocument
from orchestrator.web.ui import StaticFolder, StaticPage
from tests.test_api import Answer, ApiHarness, checkConforms, config


@pytest.fixture(scope="module")
def document():
    return ApiHarness().get("/api/v1/openapi.json").json


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_served_document_is_openapi_32(document):
    """The served document is OpenAPI 3.2.0 (for its Server-Sent Events), for this admin configuration."""
    api = ApiHarness()
    assert document["openapi"] == "3.2.0"
    assert document == openAPIDocument(api.admin, [])


def test_schemas_are_valid(document):
    """Every component schema is a valid OAS 3.1 schema and every $ref resolves."""
    for name, schema in document["components"]["schemas"].items():
        OAS31Validator.check_schema(schema)
    for ref in set(_refs(document)):
        node = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]


def _servedRoutes(api) -> dict[str, set[str]]:
    """
    Walk the resource tree: every path that answers something, with its methods.
    """
    found: dict[str, set[str]] = {}

    def walk(resource, path):
        if isinstance(resource, (ApiResource, StaticPage, StaticFolder)):
            methods = set(resource.allowedMethods()) - {"HEAD"}
            if methods:
                found[path or "/"] = methods
        if isinstance(resource, StaticFolder):  # /ui/ (and /ui) is the page, /ui/{asset} a file
            found[path + "/"] = found.pop(path)
            found[path + "/{asset}"] = set(found[path + "/"])
        children = dict(getattr(resource, "children", {}))
        if isinstance(resource, routes._Processes):
            children[b"{name}"] = routes._Process(api.orchestrator, "backend", resource._logStream)
            children.update({verb.encode(): command for verb, command in resource._onAll.items()})
        if isinstance(resource, routes._Process):
            children.update({segment: resource.getChild(segment, None) for segment in resource.ROUTES})
        if isinstance(resource, routes._Groups):
            children[b"{group}"] = routes._Group(api.orchestrator, "web")
        for segment, child in children.items():
            walk(child, f"{path}/{segment.decode()}")

    walk(api.root._tree, "")
    return found


def test_every_route_documented_with_its_methods(document):
    """The tree's routes and the document's paths are the same, with the same methods."""
    api = ApiHarness()
    documented = {path: {m.upper() for m in item if m in ("get", "post")}
                  for path, item in document["paths"].items()}
    assert _servedRoutes(api) == documented


def _operations():
    """
    Every documented operation but the event stream, which never ends and
    is checked in test_api.TestEventStream.
    """
    api = ApiHarness()
    document = api.get("/api/v1/openapi.json").json
    for path, item in document["paths"].items():
        for method in item:
            if not path.endswith("/stream"):
                yield method.upper(), path


@pytest.mark.parametrize("method, template", list(_operations()))
def test_every_operation_answers_as_documented(method, template):
    """Each documented operation, called with valid input, answers a documented status and schema."""
    api = ApiHarness()
    api.ready()
    path = template.replace("{name}", "backend").replace("{group}", "web").replace("{asset}", "app.js")
    if path.endswith("/signal"):
        answer = api.call(method, path, body=b'{"signal": "USR1"}')
    elif path.split("/")[-1] in routes.COMMANDS and (path.count("/") == 4 or "/groups/" in path):
        answer = settle(api, api.send(method, path))  # every process or a group: waits for each
    else:
        query = "?wait=false" if method == "POST" and "reload" not in path else ""
        answer = api.call(method, path + query)  # the harness checks conformance
    assert 200 <= answer.status < 300, answer


def settle(api, pending, rounds: int = 20):
    """
    Let the children asked to stop die and fake time pass until the
    answer comes (bounded).
    """
    import signal

    for _ in range(rounds):
        for child in api.reactor.spawned:
            if child.alive and signal.SIGTERM in child.signals:
                child.exited(0)
        api.advance(0.5)
        if pending.done():
            break
    return pending.answer()


def test_errors_conform():
    """Error answers (400, 404, 405, 409, 500 with status) validate against the document."""
    api = ApiHarness(config(enabled=False))
    assert api.post("/api/v1/admin/backend/start").status == 409
    assert api.get("/api/v1/processes/nope").status == 404
    assert api.get("/api/v1/processes/backend/logs?lines=x").status == 400
    assert api.call("PUT", "/api/v1/processes").status == 405


def test_without_token_no_security():
    """Without admin.token no operation asks for authentication and none lists a 401."""
    document = ApiHarness(config(token=None)).get("/api/v1/openapi.json").json
    assert "securitySchemes" not in document["components"]
    for item in document["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and "responses" in op:
                assert op["security"] == []
                assert "401" not in op["responses"]


def test_with_token_every_operation_but_metrics_is_secured(document):
    """With a token every operation needs bearerAuth and lists its 401, but /metrics and the status page's files."""
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for op in item.values():
            secured = path != "/metrics" and path not in ("/", "/ui/", "/ui/{asset}")
            assert (op["security"] == [{"bearerAuth": []}]) is secured
            assert ("401" in op["responses"]) is secured


def test_checker_catches_drift(document):
    """The conformance check fails an answer with a wrong type, a missing or an undocumented field."""
    api = ApiHarness()
    good = api.get("/api/v1/admin/backend/status")
    body = good.json
    for broken in ({**body, "pid": "1001"}, {k: v for k, v in body.items() if k != "uptime_secs"},
                   {**body, "surprise": 1}):
        import json

        with pytest.raises(ValidationError):
            checkConforms(document, "GET", "/api/v1/admin/backend/status",
                          Answer(200, good.headers, json.dumps(broken)))
    with pytest.raises(AssertionError):
        checkConforms(document, "GET", "/api/v1/admin/backend/status", Answer(418, good.headers, "{}"))
