"""
Plugin resources under C{/api/v1/plugins/<segment>}: mounted behind the
same checks as the built-in routes; clashes fail the start-up.
"""

from __future__ import annotations

import json

import pytest
from twisted.web.resource import Resource

from orchestrator.errors import ConfigError
from orchestrator.hooks.specs import hookimpl
from orchestrator.web import buildRoot
from tests.test_api import ApiHarness


class _Uptime(Resource):
    isLeaf = True

    def __init__(self, orchestrator) -> None:
        super().__init__()
        self._orchestrator = orchestrator

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({n: p.status for n, p in self._orchestrator.processes.items()}).encode()


class Plugin:
    """
    A plugin mounting the given C{(segment, resource factory)} pairs.
    """

    def __init__(self, *mounts) -> None:
        self._mounts = mounts

    @hookimpl
    def register_admin_resources(self, orchestrator):
        return [(segment, factory(orchestrator)) for segment, factory in self._mounts]


def test_plugin_resource_is_mounted():
    """A plugin's resource answers at /api/v1/plugins/<segment>."""
    api = ApiHarness(plugins=[Plugin(("uptime", _Uptime))])
    answer = api.get("/api/v1/plugins/uptime")
    assert answer.status == 200
    assert answer.json == {"backend": "starting", "worker": "starting"}


def test_plugin_resource_is_guarded():
    """A plugin's resource needs the token and a proper Host like every route."""
    api = ApiHarness(plugins=[Plugin(("uptime", _Uptime))])
    assert api.get("/api/v1/plugins/uptime", token=False).status == 401
    assert api.get("/api/v1/plugins/uptime", headers={"Host": "evil.example:8000"}).status == 421
    assert api.get("/api/v1/plugins/uptime", headers={"Origin": "https://evil.example"}).status == 403


def test_plugin_resource_in_openapi():
    """The OpenAPI document lists the mounted plugin paths."""
    api = ApiHarness(plugins=[Plugin(("uptime", _Uptime))])
    paths = api.get("/api/v1/openapi.json").json["paths"]
    assert "/api/v1/plugins/uptime" in paths


def test_segment_clash_is_a_startup_error():
    """Two plugins mounting the same segment fail buildRoot, naming both."""
    api = ApiHarness()
    pm = api.orchestrator.pluginManager
    pm.register(Plugin(("uptime", _Uptime)), name="first")
    pm.register(Plugin(("uptime", _Uptime)), name="second")
    with pytest.raises(ConfigError) as e:
        buildRoot(api.orchestrator)
    assert len(e.value.problems) == 1
    problem = e.value.problems[0]
    assert "'uptime'" in problem and "/api/v1/plugins/uptime" in problem
    assert {"first", "second"} <= set(problem.replace(":", " ").split())


@pytest.mark.parametrize("segment, factory, why", [
    ("a/b", _Uptime, "is not a single path segment"),
    ("", _Uptime, "is not a single path segment"),
    ("..", _Uptime, "is not a single path segment"),
    ("thing", lambda o: object(), "is not an IResource"),
])
def test_bad_mounts_are_startup_errors(segment, factory, why):
    """A segment that is not one path segment, or a non-resource, fails buildRoot."""
    api = ApiHarness()
    api.orchestrator.pluginManager.register(Plugin((segment, factory)), name="bad")
    with pytest.raises(ConfigError) as e:
        buildRoot(api.orchestrator)
    assert why in e.value.problems[0]
    assert e.value.problems[0].startswith("plugin bad: ")


def test_failing_hook_is_a_startup_error():
    """A register_admin_resources that raises fails buildRoot with its error."""
    class Broken:
        @hookimpl
        def register_admin_resources(self, orchestrator):
            raise RuntimeError("boom")

    api = ApiHarness()
    api.orchestrator.pluginManager.register(Broken(), name="broken")
    with pytest.raises(ConfigError, match="plugin broken: register_admin_resources failed: .*boom"):
        buildRoot(api.orchestrator)


def test_admin_service_builds_the_tree_at_construction():
    """The clash surfaces while the orchestrator is built (before twistd starts anything)."""
    from tests.fakes import FakeProcessReactor, makeOrchestrator

    api = ApiHarness()
    pm = api.loaded.pluginManager
    pm.register(Plugin(("x", _Uptime)), name="first")
    pm.register(Plugin(("x", _Uptime)), name="second")
    reactor = FakeProcessReactor()
    with pytest.raises(ConfigError):
        makeOrchestrator(api.loaded, reactor, listen=True)
