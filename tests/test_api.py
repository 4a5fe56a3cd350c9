"""
The admin API in memory: the seed's contract field by field, the
per-process routes, reload and events, over treq's StubTreq (a real Agent
and a real Site over a fake transport) on an orchestrator driven by a fake
process reactor.

Every JSON answer any test here (or in the other C{test_api_*.py}
modules, which use L{ApiHarness}) receives is also checked against the
OpenAPI document the API serves, by status code: the document describes
exactly what is served.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from openapi_schema_validator import OAS31Validator
from treq.testing import StubTreq
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from orchestrator.config.load import loadConfig
from orchestrator.web import AdminSite, buildRoot
from tests.fakes import FakeProcessReactor, ScriptedProbe, loadText, writeConfig, makeOrchestrator

BASE = "http://127.0.0.1:8000"
TOKEN = "s3cret-token-for-tests"

CONFIG = """
admin:
  listen: "tcp:8000:interface=127.0.0.1"
  token: {token}
{admin}
processes:
  backend:
    command: ["{{python}}", "-c", "pass"]
    url: "http://127.0.0.1:3000"
    restart: {{delay: 0.5, max_attempts: 3}}
    health: {{interval: 30, start_timeout: 10}}
    groups: [web]
  worker:
    command: ["{{python}}", "-c", "pass"]
    groups: [web, batch]
    start: {{ready_after: 1}}
    health: {{probe: none}}
"""


def config(token: str | None = TOKEN, admin: str = "", enabled: bool = True, extra: str = "") -> str:
    text = CONFIG.format(token=json.dumps(token), admin=admin)
    if not enabled:
        text = "orchestrator: {enabled: false}\n" + text.replace(
            '    start: {ready_after: 1}\n    health: {probe: none}\n',
            '    url: "http://127.0.0.1:3001"\n')
    return text + extra


@dataclass
class Answer:
    """
    What a client got.
    """

    status: int
    headers: dict
    text: str

    @property
    def json(self):
        return json.loads(self.text)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Pending:
    """
    A request whose answer has not come yet.
    """

    def __init__(self, harness: "ApiHarness", d, method: str, path: str) -> None:
        self._harness = harness
        self._outcome: list = []
        d.addBoth(self._outcome.append)
        self._method = method
        self._path = path

    def done(self) -> bool:
        self._harness.stub.flush()
        return bool(self._outcome)

    def answer(self) -> Answer:
        assert self.done(), f"{self._method} {self._path} is not answered yet"
        outcome = self._outcome[0]
        if isinstance(outcome, Failure):
            outcome.raiseException()
        return self._harness._finish(outcome, self._method, self._path)


class ApiHarness:
    """
    An orchestrator on a fake process reactor, its API in memory.

    @ivar reactor: the L{FakeProcessReactor} (children, clock).
    @ivar probes: the L{ScriptedProbe} of each probed process, by name.
    """

    def __init__(self, yaml: str | None = None, probe: bool | None = True, plugins=()) -> None:
        self.loaded = loadText(yaml if yaml is not None else config())
        for plugin in plugins:
            self.loaded.pluginManager.register(plugin)
        self.reactor = r = FakeProcessReactor()
        self.probes: dict[str, ScriptedProbe] = {}
        self._auto = probe
        # (killGroup: fake pids must never reach os.killpg.)
        self.orchestrator = o = makeOrchestrator(self.loaded, r,
                                                 probeFactory=self._probe,
                                                 reload=self._reload)
        o.startService()
        self.admin = o.config.admin
        self.root = buildRoot(o)
        self.stub = StubTreq(self.root)
        # StubTreq serves with a plain Site; the API's own Site adds the
        # body cap and JSON answers for failures outside the tree.
        self.stub._agent._serverFactory = AdminSite(
            self.root, self.admin, reactor=self.stub._agent._memoryReactor)
        # The document as served: every answer is checked against it.
        v1 = self.root._tree.children[b"api"].children[b"v1"]
        self.openapi = v1.children[b"openapi.json"].GET(None)

    def rewrite(self, text: str) -> None:
        """
        Replace the configuration file (for a reload).
        """
        writeConfig(text, os.path.dirname(self.loaded.config.path))

    def _reload(self):
        return loadConfig(self.loaded.config.path, envFile=os.devnull, environ={}, entryPoints=False)

    def _probe(self, health):
        probe = self.probes[health.process] = ScriptedProbe(auto=self._auto)
        return probe

    # -- requests ----------------------------------------------------------------

    def send(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
             token: str | None | bool = True, url: str = BASE) -> Pending:
        """
        Send a request; the token goes along unless C{token} is C{False}
        (or a string to send instead).
        """
        headers = dict(headers or {})
        if token is True and self.admin.token:
            headers.setdefault("Authorization", f"Bearer {self.admin.token}")
        elif isinstance(token, str):
            headers.setdefault("Authorization", f"Bearer {token}")
        d = self.stub.request(method, url + path, headers=headers, data=body)

        def read(response):
            return self.stub.content(response).addCallback(lambda body: (response, body))

        d.addCallback(read)
        return Pending(self, d, method, path)

    def call(self, method: str, path: str, **kwargs) -> Answer:
        """
        Send a request and return its answer, which must come at once.
        """
        return self.send(method, path, **kwargs).answer()

    def get(self, path: str, **kwargs) -> Answer:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> Answer:
        return self.call("POST", path, **kwargs)

    def _finish(self, responseAndBody, method: str, path: str) -> Answer:
        response, body = responseAndBody
        headers = {k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()}
        answer = Answer(response.code, headers, body.decode("utf-8"))
        checkConforms(self.openapi, method, path, answer)
        return answer

    # -- driving the processes ------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.reactor.advance(seconds)
        self.stub.flush()

    def children(self, name: str):
        process = self.orchestrator.processes[name]
        return [c for c in self.reactor.spawned if c.args == list(process.config.command)
                and c.proto._owner is process]

    def ready(self, name: str = "backend") -> None:
        """
        Let a starting process become ready (its probe passes, or
        C{ready_after} passes for an unprobed one).
        """
        self.advance(0.01 if name in self.probes else 1.0)
        assert self.orchestrator.processes[name].status == "running"

    def stopOrchestrator(self):
        d = self.orchestrator.stopService()
        for child in list(self.reactor.spawned):
            if child.alive:
                child.exited(0)
        return d


# -- OpenAPI conformance --------------------------------------------------------------------


def _template(document: dict, path: str) -> str | None:
    parts = path.split("?")[0].rstrip("/").split("/") or [""]
    for template in document["paths"]:
        tparts = template.rstrip("/").split("/")
        if len(tparts) == len(parts) and all(
                t == p or (t.startswith("{") and t.endswith("}") and p) for t, p in zip(tparts, parts)):
            return template
    return None


def schemaValidator(document: dict, schema: dict):
    registry = Registry().with_resource(
        "urn:openapi", Resource.from_contents(document, default_specification=DRAFT202012))
    ref = schema.get("$ref")
    if ref is not None:
        schema = {"$ref": "urn:openapi" + ref}
    return OAS31Validator(schema, registry=registry)


def checkConforms(document: dict, method: str, path: str, answer: Answer) -> None:
    """
    Assert that an answer is what the OpenAPI document says this route
    answers with this status (an error for unknown paths and methods).
    """
    if answer.status in (204, 304):  # no body
        return
    assert answer.header("content-type") is not None, f"{method} {path}: no Content-Type"
    template = _template(document, path)
    operation = document["paths"].get(template, {}).get("get" if method == "HEAD" else method.lower())
    if operation is None or "responses" not in (operation or {}):
        # Not a documented operation: an error in the common shape.
        if template is not None and "/plugins/" in template:
            return
        assert answer.status in (400, 401, 403, 404, 405, 413, 421), (method, path, answer)
        assert answer.header("content-type") == "application/json"
        if method != "HEAD":
            schemaValidator(document, {"$ref": "#/components/schemas/Error"}).validate(answer.json)
        return
    response = operation["responses"].get(str(answer.status))
    assert response is not None, f"{method} {path} answered {answer.status}, not documented: {answer.text}"
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    contentType = answer.header("content-type").split(";")[0].strip()
    assert contentType in response["content"], (method, path, contentType)
    if method == "HEAD" or contentType != "application/json":
        return
    schemaValidator(document, response["content"][contentType]["schema"]).validate(answer.json)


@pytest.fixture
def api():
    harness = ApiHarness()
    yield harness
    harness.stopOrchestrator()


def _types(body: dict, expected: dict) -> None:
    """
    Assert each field is there with exactly this JSON type (an integer is
    not a float, a boolean is not an integer).
    """
    for key, kind in expected.items():
        assert key in body, f"missing {key!r} in {body}"
        assert type(body[key]) is kind, f"{key}: {body[key]!r} is not {kind.__name__}"


SEED_STATUS = {"status": str, "pid": int, "uptime_secs": int, "restart_count": int,
               "last_health_check": str, "is_running": bool}


# -- the seed's contract --------------------------------------------------------------------


class TestSeedStatus:
    def test_fields_and_types(self, api):
        """GET status answers the seed's six fields with the seed's JSON types."""
        api.ready()
        answer = api.get("/api/v1/admin/backend/status")
        assert answer.status == 200
        assert answer.header("content-type") == "application/json"
        body = answer.json
        _types(body, SEED_STATUS)
        assert body["status"] == "running"
        assert body["pid"] == api.children("backend")[-1].pid
        assert body["is_running"] is True
        assert body["last_health_check"] == "healthy"

    def test_uptime_is_whole_seconds(self, api):
        """uptime_secs counts whole seconds since the child was spawned."""
        api.ready()
        api.advance(3600.4)
        assert api.get("/api/v1/admin/backend/status").json["uptime_secs"] == 3600

    def test_last_health_check_follows_the_probe(self, api):
        """last_health_check is unknown before any check, then the last verdict."""
        assert api.get("/api/v1/admin/backend/status").json["last_health_check"] == "unknown"
        api.ready()
        assert api.get("/api/v1/admin/backend/status").json["last_health_check"] == "healthy"
        api.probes["backend"].auto = False
        api.advance(30)
        assert api.get("/api/v1/admin/backend/status").json["last_health_check"] == "unhealthy"

    def test_last_health_check_unknown_without_probe(self, api):
        """A process without a probe reports last_health_check 'unknown'."""
        api.ready("worker")
        body = api.get("/api/v1/processes/worker/status").json
        assert (body["status"], body["last_health_check"], body["health"]) == ("running", "unknown", None)

    def test_is_running_and_pid_when_stopped(self, api):
        """A stopped process has is_running false, pid null and uptime 0."""
        api.ready()
        pending = api.send("POST", "/api/v1/admin/backend/stop")
        api.children("backend")[-1].exited(0)
        assert pending.answer().status == 200
        body = api.get("/api/v1/admin/backend/status").json
        assert (body["status"], body["is_running"], body["pid"], body["uptime_secs"]) == (
            "stopped", False, None, 0)

    def test_crashed_process_shows_its_exit_and_next_restart(self, api):
        """After a crash the status shows crashed, the exit and the pending restart."""
        api.ready()
        api.advance(5)
        api.children("backend")[-1].exited(3)
        body = api.get("/api/v1/admin/backend/status").json
        assert body["status"] in ("crashed", "starting")
        assert body["last_exit"]["exit_code"] == 3
        assert body["last_exit"]["description"] == "exit code 3"
        assert body["last_exit"]["clean"] is False


class TestSeedCommands:
    def test_start_waits_for_readiness(self):
        """POST start answers only once the probe passes, with the seed's fields."""
        api = ApiHarness(probe=None)
        api.probes["backend"].pending.clear()
        stop = api.send("POST", "/api/v1/admin/backend/stop")
        api.children("backend")[-1].exited(0)
        assert stop.answer().status == 200
        pending = api.send("POST", "/api/v1/admin/backend/start")
        api.advance(0.01)
        assert not pending.done()
        api.probes["backend"].answer(True)
        answer = pending.answer()
        assert answer.status == 200
        body = answer.json
        _types(body, {"success": bool, "message": str, "pid": int, "status": str})
        assert body["success"] is True
        assert body["message"] == "Backend started successfully"
        assert body["status"] == "running"
        assert body["pid"] == api.children("backend")[-1].pid

    def test_start_when_running_is_idempotent(self, api):
        """Starting a running process succeeds and spawns nothing."""
        api.ready()
        before = len(api.reactor.spawned)
        body = api.post("/api/v1/admin/backend/start").json
        assert body["success"] is True
        assert body["message"] == "Backend is already running"
        assert body["pid"] == api.children("backend")[-1].pid
        assert len(api.reactor.spawned) == before

    def test_start_without_waiting(self, api):
        """?wait=false answers as soon as the child is spawned, status starting."""
        api.ready()
        api.send("POST", "/api/v1/admin/backend/stop")
        api.children("backend")[-1].exited(0)
        answer = api.post("/api/v1/admin/backend/start?wait=false")
        assert answer.status == 200
        assert answer.json["status"] == "starting"
        assert answer.json["message"] == "Backend is starting"

    def test_wait_in_the_body(self, api):
        """A JSON body {"wait": false} works like ?wait=false."""
        api.ready()
        answer = api.post("/api/v1/admin/backend/restart", body=b'{"wait": false}',
                          headers={"Content-Type": "application/json"})
        assert answer.status == 202
        assert answer.json["message"] == "Backend restart requested"

    def test_stop_waits_until_reaped(self, api):
        """POST stop sends SIGTERM and answers once the child has exited."""
        api.ready()
        child = api.children("backend")[-1]
        pending = api.send("POST", "/api/v1/admin/backend/stop")
        assert not pending.done()
        assert child.signals == [15]
        child.exited(0)
        answer = pending.answer()
        assert answer.status == 200
        assert answer.json["success"] is True
        assert answer.json["message"] == "Backend stopped successfully"
        assert answer.json["status"] == "stopped"

    def test_stop_when_stopped_is_idempotent(self, api):
        """Stopping a stopped process succeeds at once."""
        api.ready()
        api.send("POST", "/api/v1/admin/backend/stop")
        api.children("backend")[-1].exited(0)
        answer = api.post("/api/v1/admin/backend/stop")
        assert answer.status == 200
        assert answer.json["success"] is True
        assert answer.json["message"] == "Backend is already stopped"

    def test_restart(self, api):
        """POST restart stops, waits restart.delay, starts a new child and answers when it is ready."""
        api.ready()
        old = api.children("backend")[-1]
        pending = api.send("POST", "/api/v1/admin/backend/restart")
        old.exited(0)
        api.advance(0.49)
        assert len(api.children("backend")) == 1
        api.advance(0.01)
        assert len(api.children("backend")) == 2
        assert not pending.done()
        api.advance(0.01)
        body = pending.answer().json
        _types(body, {"success": bool, "message": str, "restart_count": int, "pid": int})
        assert body["success"] is True
        assert body["message"] == "Backend restarted successfully"
        assert body["restart_count"] == 1
        assert body["pid"] == api.children("backend")[-1].pid != old.pid

    def test_restart_without_waiting_is_accepted(self, api):
        """?wait=false on a restart answers 202 at once while the restart goes on."""
        api.ready()
        answer = api.post("/api/v1/admin/backend/restart?wait=false")
        assert answer.status == 202
        assert answer.json["success"] is True
        assert answer.json["status"] == "stopping"
        api.children("backend")[-1].exited(0)
        api.advance(0.5)
        api.advance(0.01)
        assert api.get("/api/v1/admin/backend/status").json["restart_count"] == 1

    def test_failed_start_names_the_missing_file(self, tmp_path):
        """A start whose executable is gone answers the seed's error with the path."""
        server = tmp_path / "server"
        server.write_text("#!/bin/sh\n")
        server.chmod(0o755)
        api = ApiHarness(config().replace('["{python}", "-c", "pass"]\n    url',
                                          f'["{server}"]\n    url', 1))
        pending = api.send("POST", "/api/v1/admin/backend/stop")
        api.children("backend")[-1].exited(0)
        assert pending.answer().status == 200
        server.unlink()
        answer = api.post("/api/v1/admin/backend/start")
        assert answer.status == 500
        assert answer.json["success"] is False
        assert answer.json["error"] == f"Failed to start backend: No such file or directory: {server}"
        assert answer.json["status"] == "crashed"

    def test_start_that_exits_fails(self):
        """A child that exits while starting fails the start with its exit code."""
        api = ApiHarness(probe=None)
        api.send("POST", "/api/v1/admin/backend/stop")
        api.children("backend")[-1].exited(0)
        pending = api.send("POST", "/api/v1/admin/backend/start")
        api.children("backend")[-1].exited(1)
        answer = pending.answer()
        assert answer.status == 500
        assert answer.json["error"] == "Failed to start backend: exit code 1"

    def test_failed_start_carries_the_last_output_lines(self):
        """A start that fails answers 500 with the child's last output lines: at most 20, each at most 500 characters."""
        api = ApiHarness(probe=None)
        api.send("POST", "/api/v1/admin/backend/stop")
        api.children("backend")[-1].exited(0)
        pending = api.send("POST", "/api/v1/admin/backend/start")
        child = api.children("backend")[-1]
        child.output(b"".join(b"line %d\n" % i for i in range(30)))
        child.output(b"listen tcp :3000: bind: address already in use " + b"x" * 600 + b"\n", fd=2)
        child.exited(1)
        answer = pending.answer()
        assert answer.status == 500
        output = answer.json["output"]
        assert len(output) == 20
        assert output[:2] == ["line 11", "line 12"]
        assert output[-1].startswith("listen tcp :3000: bind: address already in use")
        assert len(output[-1]) == 500

    def test_start_timeout_fails(self):
        """A child never ready within health.start_timeout fails the start."""
        api = ApiHarness(probe=False)
        api.send("POST", "/api/v1/admin/backend/stop")
        api.children("backend")[-1].exited(0)
        pending = api.send("POST", "/api/v1/admin/backend/start")
        api.advance(10)
        api.children("backend")[-1].exited(0)
        answer = pending.answer()
        assert answer.status == 500
        assert answer.json["error"] == "Failed to start backend: not ready within 10.0s"

    def test_malformed_wait(self, api):
        """wait=maybe is a 400 naming the parameter."""
        answer = api.post("/api/v1/admin/backend/start?wait=maybe")
        assert answer.status == 400
        assert "'wait'" in answer.json["error"]

    @pytest.mark.parametrize("body, why", [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"command": "rm -rf /"}', "unknown field 'command'"),
        (b'{"wait": "no"}', "must be a bool"),
    ])
    def test_malformed_body(self, api, body, why):
        """A body that is not {"wait": bool} is a 400 and nothing happens."""
        before = len(api.reactor.spawned)
        answer = api.post("/api/v1/admin/backend/restart", body=body)
        assert answer.status == 400
        assert why in answer.json["error"]
        assert len(api.reactor.spawned) == before
        assert api.orchestrator.processes["backend"].status == "starting"

    def test_concurrent_restarts_coalesce(self, api):
        """Five restarts at once: one new child, and all five callers answered with its outcome within that one restart."""
        api.ready()
        pendings = [api.send("POST", "/api/v1/admin/backend/restart") for _ in range(5)]
        api.children("backend")[-1].exited(0)
        api.advance(0.5)
        api.advance(0.01)
        answers = [p.answer() for p in pendings]
        children = api.children("backend")
        assert len(children) == 2
        assert {a.status for a in answers} == {200}
        assert {a.json["pid"] for a in answers} == {children[-1].pid}
        assert {a.json["restart_count"] for a in answers} == {1}
        assert sum(1 for c in children if c.alive) == 1

    def test_client_gone_does_not_cancel_the_command(self, api):
        """A client that disconnects mid-restart is not answered, and the restart completes."""
        from twisted.logger import globalLogPublisher

        failures = []
        observer = lambda event: failures.append(event) if event.get("log_failure") else None  # noqa: E731
        globalLogPublisher.addObserver(observer)
        try:
            api.ready()
            pending = api.send("POST", "/api/v1/admin/backend/restart")
            for pump in list(api.stub._agent._pumps):
                pump.clientIO.loseConnection()
            api.stub.flush()
            api.children("backend")[-1].exited(0)
            api.advance(0.5)
            api.advance(0.01)
        finally:
            globalLogPublisher.removeObserver(observer)
        assert api.orchestrator.processes["backend"].status == "running"
        assert len(api.children("backend")) == 2
        assert failures == []
        del pending

    def test_monitor_only_refuses_commands(self):
        """In monitor-only mode start, stop and restart answer 409 and spawn nothing."""
        api = ApiHarness(config(enabled=False))
        for verb in ("start", "stop", "restart"):
            answer = api.post(f"/api/v1/admin/backend/{verb}")
            assert answer.status == 409
            assert answer.json["success"] is False
            assert "monitor-only" in answer.json["error"]
        assert api.reactor.spawned == []
        assert api.get("/api/v1/admin/backend/health").json["orchestrator_enabled"] is False
        assert api.get("/api/v1/admin/backend/status").json["status"] == "unknown"


class TestSeedHealth:
    def test_fields_and_types(self, api):
        """GET health answers the seed's five fields with their JSON types."""
        api.ready()
        body = api.get("/api/v1/admin/backend/health").json
        _types(body, {"orchestrator_enabled": bool, "backend_status": str, "health_check_interval": int,
                      "auto_restart": bool, "max_restart_attempts": int})
        assert body["orchestrator_enabled"] is True
        assert body["backend_status"] == "running"
        assert body["health_check_interval"] == 30
        assert body["auto_restart"] is True
        assert body["max_restart_attempts"] == 3

    def test_default_process_is_configurable(self):
        """The seed's routes act on admin.default_process."""
        api = ApiHarness(config(admin="  default_process: worker"))
        api.ready("worker")
        assert api.get("/api/v1/admin/backend/health").json["process"] == "worker"
        assert api.get("/api/v1/admin/backend/status").json["name"] == "worker"

    def test_missing_default_process(self):
        """Without a process named admin.default_process the seed's routes are 404s saying so."""
        # An explicit default_process naming no process is a config error;
        # the schema default ("backend") may be absent from a configuration.
        api = ApiHarness(config().replace("  backend:", "  frontend:"))
        for method, route in [("GET", "status"), ("GET", "health"), ("POST", "start")]:
            answer = api.call(method, f"/api/v1/admin/backend/{route}")
            assert answer.status == 404
            assert answer.json["error"] == "no process named 'backend' (admin.default_process)"


# -- per-process routes ----------------------------------------------------------------------------


class TestProcesses:
    def test_list(self, api):
        """GET /processes lists every configured process in order with its status."""
        api.ready()
        body = api.get("/api/v1/processes").json
        assert [p["name"] for p in body["processes"]] == ["backend", "worker"]
        assert body["processes"][0]["status"] == "running"
        assert body["default_process"] == "backend"
        assert body["orchestrator_enabled"] is True

    def test_one(self, api):
        """GET /processes/{name} and /status answer the process's status."""
        api.ready("worker")
        one = api.get("/api/v1/processes/worker").json
        assert one == api.get("/api/v1/processes/worker/status").json
        assert one["name"] == "worker"
        assert one["status"] == "running"

    @pytest.mark.parametrize("method, route", [
        ("GET", ""), ("GET", "/status"), ("GET", "/logs"), ("GET", "/health"),
        ("POST", "/start"), ("POST", "/stop"), ("POST", "/restart")])
    def test_unknown_process(self, api, method, route):
        """Every per-process route answers 404 JSON for a process that is not configured."""
        answer = api.call(method, f"/api/v1/processes/nope{route}")
        assert answer.status == 404
        assert answer.json == {"success": False, "error": "no process named 'nope'"}

    def test_commands_act_on_the_named_process(self, api):
        """POST /processes/worker/stop and /start act on worker only."""
        api.ready()
        api.ready("worker")
        backendPid = api.orchestrator.processes["backend"].pid
        pending = api.send("POST", "/api/v1/processes/worker/stop")
        api.children("worker")[-1].exited(0)
        assert pending.answer().json["message"] == "Worker stopped successfully"
        pending = api.send("POST", "/api/v1/processes/worker/start")
        api.advance(1)
        body = pending.answer().json
        assert (body["message"], body["status"]) == ("Worker started successfully", "running")
        assert api.orchestrator.processes["backend"].pid == backendPid

    def test_cached_answers_equal_fresh_renderings(self, api):
        """Status answers served from the per-process cache are byte for byte a fresh json.dumps of the state, through probes, time, a crash, a pending restart and a stop."""
        from orchestrator.web import views
        from orchestrator.web._render import jsonBody

        o = api.orchestrator

        def check():
            for name, process in o.processes.items():
                fresh = jsonBody(views.processStatus(process.snapshot())).decode()
                assert api.get(f"/api/v1/processes/{name}").text == fresh
            listing = jsonBody({"orchestrator_enabled": True, "default_process": "backend",
                                "processes": [views.processStatus(p.snapshot())
                                              for p in o.processes.values()]}).decode()
            assert api.get("/api/v1/processes").text == listing
            assert api.get("/api/v1/admin/backend/status").text == \
                jsonBody(views.processStatus(o.processes["backend"].snapshot())).decode()

        check()
        api.ready()
        api.ready("worker")
        check()
        api.advance(30)  # a probe result, and 30 s more uptime
        check()
        api.advance(0.4)
        check()
        api.children("backend")[-1].exited(1)  # crashed: a restart pending (next_restart_in)
        check()
        api.advance(0.2)
        check()
        api.advance(0.5)
        check()
        pending = api.send("POST", "/api/v1/processes/worker/stop")
        api.children("worker")[-1].exited(0)
        pending.answer()
        check()

    def test_logs(self, api):
        """GET logs answers the last lines the process wrote, ?lines=N of them."""
        child = api.children("backend")[-1]
        child.output(b"one\ntwo\n")
        child.output(b"oops\n", fd=2)
        body = api.get("/api/v1/processes/backend/logs").json
        assert [(line["stream"], line["text"]) for line in body["lines"]] == [
            ("stdout", "one"), ("stdout", "two"), ("stderr", "oops")]
        assert body["lines"][0]["pid"] == child.pid
        assert body["count"] == 3
        body = api.get("/api/v1/processes/backend/logs?lines=2").json
        assert [line["text"] for line in body["lines"]] == ["two", "oops"]
        assert api.get("/api/v1/processes/backend/logs?lines=0").json["lines"] == []

    @pytest.mark.parametrize("query", ["lines=abc", "lines=-1", "lines=1.5", "lines=1&lines=2",
                                       "lines=100001"])
    def test_logs_malformed_lines(self, api, query):
        """A lines parameter that is not one integer in range is a 400."""
        answer = api.get(f"/api/v1/processes/backend/logs?{query}")
        assert answer.status == 400
        assert "'lines'" in answer.json["error"]

    def test_health_results(self, api):
        """GET health answers the last probe results, ?limit=N of them."""
        api.ready()
        api.probes["backend"].auto = False
        api.advance(30)
        body = api.get("/api/v1/processes/backend/health").json
        assert [r["healthy"] for r in body["results"]] == [True, False]
        assert (body["total"], body["successes"], body["failures"]) == (2, 1, 1)
        assert body["last_health_check"] == "unhealthy"
        body = api.get("/api/v1/processes/backend/health?limit=1").json
        assert [r["reason"] for r in body["results"]] == ["HTTP 503"]

    def test_health_without_probe(self, api):
        """A process without a probe has no results and probe 'none'."""
        body = api.get("/api/v1/processes/worker/health").json
        assert (body["probe"], body["results"], body["last_health_check"]) == ("none", [], "unknown")


# -- reload ------------------------------------------------------------------------------------------


class TestReload:
    def test_reload_applies_the_new_configuration(self, api):
        """POST reload applies the file by diff and lists what changed."""
        api.ready()
        api.rewrite(config() + """
  extra:
    command: ["{python}", "-c", "pass"]
    health: {probe: none}
""")
        answer = api.post("/api/v1/admin/reload")
        assert answer.status == 200
        body = answer.json
        assert body["success"] is True
        assert (body["added"], body["removed"], body["changed"]) == (["extra"], [], [])
        assert sorted(body["unchanged"]) == ["backend", "worker"]
        assert [p["name"] for p in api.get("/api/v1/processes").json["processes"]] == [
            "backend", "worker", "extra"]

    def test_reload_answer_says_per_process_what_it_did(self, api):
        """POST reload answers, per process, unchanged / updated in place (fields) / replaced (fields); a tuned probe keeps the pid."""
        api.ready()
        pid = api.get("/api/v1/processes/backend").json["pid"]
        api.rewrite(config().replace("health: {interval: 30, start_timeout: 10}",
                                     "health: {interval: 5, start_timeout: 10}")
                    .replace('start: {ready_after: 1}', 'start: {ready_after: 1}\n    env: {A: "1"}'))
        pending = api.send("POST", "/api/v1/admin/reload")
        api.children("worker")[-1].exited(0)  # the replaced worker stops
        api.stub.flush()
        answer = pending.answer()
        assert answer.status == 200
        body = answer.json
        assert (body["updated"], body["replaced"], body["unchanged"]) == (["backend"], ["worker"], [])
        assert body["changed"] == ["backend", "worker"]
        assert body["processes"]["backend"] == {
            "outcome": "updated", "fields": ["health.interval"],
            "description": "updated in place (health.interval)"}
        assert body["processes"]["worker"]["description"] == "replaced (env)"
        assert api.get("/api/v1/processes/backend").json["pid"] == pid

    def test_invalid_configuration_lists_every_problem(self, api):
        """An invalid file is a 400 listing every problem; the running configuration stays."""
        api.rewrite("processes:\n  backend:\n    command: 3\n    restart: {max_attempts: -1}\n")
        answer = api.post("/api/v1/admin/reload")
        assert answer.status == 400
        body = answer.json
        assert body["success"] is False
        assert len(body["problems"]) >= 2
        assert any("command" in p for p in body["problems"])
        assert any("max_attempts" in p for p in body["problems"])
        assert "the running configuration is kept" in body["error"]
        assert [p["name"] for p in api.get("/api/v1/processes").json["processes"]] == ["backend", "worker"]

    def test_reload_takes_no_body(self, api):
        """A reload with a body that is not an empty JSON object is a 400 and reloads nothing."""
        answer = api.post("/api/v1/admin/reload", body=b'{"path": "/etc/passwd"}')
        assert answer.status == 400
        assert "unknown field 'path'" in answer.json["error"]


# -- events ------------------------------------------------------------------------------------------


class TestEvents:
    def test_recent_events(self, api):
        """GET events lists what happened, oldest first, with a sequence to poll from."""
        api.ready()
        body = api.get("/api/v1/events").json
        kinds = [(e["type"], e["process"]) for e in body["events"]]
        assert ("starting", "backend") in kinds and ("running", "backend") in kinds
        assert body["last_sequence"] == body["events"][-1]["sequence"]
        api.children("backend")[-1].exited(1)
        later = api.get(f"/api/v1/events?since={body['last_sequence']}").json["events"]
        assert later[0]["type"] == "crashed"
        assert later[0]["exit_code"] == 1
        assert all(e["sequence"] > body["last_sequence"] for e in later)

    def test_filters(self, api):
        """process=, type= and limit= narrow the list."""
        api.ready()
        api.ready("worker")
        assert {e["process"] for e in api.get("/api/v1/events?process=worker").json["events"]} == {"worker"}
        assert {e["type"] for e in api.get("/api/v1/events?type=running").json["events"]} == {"running"}
        assert len(api.get("/api/v1/events?limit=1").json["events"]) == 1

    @pytest.mark.parametrize("query", ["since=abc", "since=-1", "limit=0", "limit=x"])
    def test_malformed_query(self, api, query):
        """Malformed since/limit are 400s."""
        assert api.get(f"/api/v1/events?{query}").status == 400


def openStream(api, path: str, headers: dict | None = None):
    """
    Open a Server-Sent Events route in memory: its response, and the list
    its chunks arrive in.
    """
    chunks = []
    d = api.stub.request("GET", BASE + path, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
    responses = []

    def got(response):
        responses.append(response)
        return api.stub.collect(response, chunks.append)

    d.addCallback(got)
    # A test that drops the connection ends the body with ResponseFailed:
    # expected, and it must not surface as an unhandled error at a later
    # garbage collection (in another test).
    d.addErrback(lambda failure: failure.trap(ResponseFailed))
    api.stub.flush()
    return responses[0], chunks


class TestEventStream:
    def _open(self, api, path="/api/v1/events/stream"):
        return openStream(api, path)

    def test_stream_delivers_events(self, api):
        """The SSE stream sends each new event with its sequence, type and JSON data."""
        response, chunks = self._open(api)
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type") == [b"text/event-stream; charset=utf-8"]
        api.ready()
        text = b"".join(chunks).decode()
        assert text.startswith("retry: 2000\n\n")
        event = api.orchestrator.events.recent[-1]
        assert f"id: {event.sequence}\nevent: running\ndata: " in text
        data = text.split("event: running\ndata: ")[1].split("\n\n")[0]
        assert json.loads(data)["process"] == "backend"

    def test_stream_replays_since(self, api):
        """?since= replays the recent events after that sequence first."""
        api.ready()
        response, chunks = self._open(api, "/api/v1/events/stream?since=0&process=backend")
        text = b"".join(chunks).decode()
        assert "event: starting" in text and "event: running" in text
        assert '"process": "worker"' not in text

    def test_stream_keepalive_and_cleanup(self, api):
        """The stream pings every 15 s, and a client that leaves is unsubscribed with its timer."""
        response, chunks = self._open(api)
        api.advance(15)
        assert chunks[-1] == b": keep-alive\n\n"
        bus = api.orchestrator.events
        assert len(bus._subscribers) == 2  # the supervisor's and ours
        for pump in list(api.stub._agent._pumps):
            pump.clientIO.loseConnection()
        api.stub.flush()
        assert len(bus._subscribers) == 1
        calls = len(api.reactor.getDelayedCalls())
        api.advance(15)
        assert len(api.reactor.getDelayedCalls()) <= calls

    def test_stream_bad_last_event_id(self, api):
        """A Last-Event-ID that is not a number is a 400."""
        answer = api.get("/api/v1/events/stream", headers={"Last-Event-ID": "abc"})
        assert answer.status == 400
