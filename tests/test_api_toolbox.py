"""
The operator's toolbox routes, in memory on the fake process reactor:
signals, groups, commands on every process, the log stream, and
restarts that coalesce.  Every answer is checked against the OpenAPI
document by the L{ApiHarness}.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.test_api import ApiHarness, config, openStream
from tests.test_api_openapi import settle

DEPENDENT = config(extra="""\
  db:
    command: ["{python}", "-c", "pass"]
    start: {ready_after: 1}
    health: {probe: none}
    groups: [chain]
  app:
    command: ["{python}", "-c", "pass"]
    start: {ready_after: 1}
    health: {probe: none}
    depends_on: [db]
    groups: [chain]
""")


@pytest.fixture
def api():
    harness = ApiHarness()
    yield harness
    harness.stopOrchestrator()


def _body(text: str) -> bytes:
    return text.encode("utf-8")


class TestSignal:
    def test_signal_reaches_the_group(self, api):
        """POST signal {"signal": "USR1"} signals the child's group and answers 200 with its status."""
        api.ready()
        answer = api.post("/api/v1/processes/backend/signal", body=_body('{"signal": "USR1"}'))
        assert answer.status == 200
        assert answer.json["signal"] == "USR1" and answer.json["to"] == "group"
        assert answer.json["status"] == "running"
        assert api.children("backend")[-1].signals == [signal.SIGUSR1]

    def test_signal_to_the_process_alone_by_number(self, api):
        """A signal number and to: process signal the child alone."""
        api.ready()
        body = json.dumps({"signal": int(signal.SIGHUP), "to": "process"}).encode()
        answer = api.post("/api/v1/processes/backend/signal", body=body)
        assert answer.status == 200 and answer.json["signal"] == "HUP"
        assert api.children("backend")[-1].signals == [("process", signal.SIGHUP)]

    @pytest.mark.parametrize("body", ['{"signal": "BOGUS"}', '{"signal": "KILL"}', '{"signal": 9}',
                                      '{"signal": "STOP"}', '{"signal": true}', '{}',
                                      '{"signal": "USR1", "to": "everyone"}', '{"signal": "usr1"}'])
    def test_bad_signal_is_400(self, api, body):
        """An unknown, refused or malformed signal is a 400 and nothing is sent."""
        api.ready()
        answer = api.post("/api/v1/processes/backend/signal", body=_body(body))
        assert answer.status == 400
        assert answer.json["success"] is False
        assert api.children("backend")[-1].signals == []

    def test_kill_names_the_alternative(self, api):
        """Refusing KILL says to use stop."""
        answer = api.post("/api/v1/processes/backend/signal", body=_body('{"signal": "SIGKILL"}'))
        assert "use stop" in answer.json["error"]

    def test_not_running_is_409(self, api):
        """A signal to a stopped process is a 409."""
        api.ready()
        settle(api, api.send("POST", "/api/v1/processes/backend/stop"))
        answer = api.post("/api/v1/processes/backend/signal", body=_body('{"signal": "USR1"}'))
        assert answer.status == 409
        assert "not running" in answer.json["error"]

    def test_monitor_only_is_409(self):
        """In monitor-only mode a signal is refused with a 409."""
        api = ApiHarness(config(enabled=False))
        answer = api.post("/api/v1/processes/backend/signal", body=_body('{"signal": "USR1"}'))
        assert answer.status == 409


class TestGroups:
    def test_list_groups(self, api):
        """GET /api/v1/groups lists each group by name with its members in configuration order."""
        answer = api.get("/api/v1/groups")
        assert answer.json == {"groups": [{"name": "batch", "processes": ["worker"]},
                                          {"name": "web", "processes": ["backend", "worker"]}]}

    def test_group_detail_and_unknown_group(self, api):
        """GET a group gives its members' status; an unknown group is a 404."""
        answer = api.get("/api/v1/groups/batch")
        assert [p["name"] for p in answer.json["processes"]] == ["worker"]
        assert answer.json["processes"][0]["groups"] == ["web", "batch"]
        assert api.post("/api/v1/groups/nope/restart").status == 404

    def test_group_stop_and_start(self, api):
        """POST a group's stop then start acts on each member and lists every outcome."""
        api.ready()
        stopped = settle(api, api.send("POST", "/api/v1/groups/web/stop"))
        assert stopped.json["success"] is True and stopped.json["group"] == "web"
        assert {p["name"]: p["status"] for p in stopped.json["processes"]} == {
            "backend": "stopped", "worker": "stopped"}
        started = settle(api, api.send("POST", "/api/v1/groups/batch/start"))
        assert [(p["name"], p["status"]) for p in started.json["processes"]] == [("worker", "running")]
        assert api.orchestrator.processes["backend"].status == "stopped"

    def test_bulk_failure_is_listed(self):
        """In monitor-only mode every process's refusal is listed and success is false."""
        api = ApiHarness(config(enabled=False))
        answer = api.post("/api/v1/processes/restart")
        assert answer.status == 200
        assert answer.json["success"] is False
        assert all("monitor-only" in p["error"] for p in answer.json["processes"])


class TestAll:
    def test_dependency_order(self):
        """POST /api/v1/processes/stop stops dependents first; start starts dependencies first."""
        api = ApiHarness(DEPENDENT)
        api.advance(1.0)
        api.advance(1.0)
        stopped = settle(api, api.send("POST", "/api/v1/processes/stop"))
        names = [p["name"] for p in stopped.json["processes"]]
        assert names.index("app") < names.index("db")
        started = settle(api, api.send("POST", "/api/v1/processes/start"), rounds=40)
        names = [p["name"] for p in started.json["processes"]]
        assert names.index("db") < names.index("app")
        assert started.json["success"] is True, started.json
        assert all(p["status"] == "running" for p in started.json["processes"])

    def test_dependent_of_a_failure_is_not_started(self):
        """A process whose dependency failed to start in the same command is not started, and says why."""
        api = ApiHarness(DEPENDENT)
        api.advance(1.0)
        api.advance(1.0)
        settle(api, api.send("POST", "/api/v1/groups/chain/stop"))
        api.reactor.spawnError = OSError("no more processes")
        answer = settle(api, api.send("POST", "/api/v1/groups/chain/start"))
        outcome = {p["name"]: p for p in answer.json["processes"]}
        assert outcome["db"]["success"] is False
        assert outcome["app"] == {**outcome["app"], "success": False,
                                  "error": "not started: its dependency db failed"}
        assert api.orchestrator.processes["app"].status == "stopped"

    def test_process_removed_meanwhile_is_listed(self):
        """A process a reload removes while a bulk command waits for its dependency is listed as removed, not a 500."""
        api = ApiHarness(DEPENDENT)
        api.advance(1.0)
        api.advance(1.0)
        pending = api.send("POST", "/api/v1/groups/chain/restart")
        api.rewrite(DEPENDENT.split("  app:")[0])
        reload = api.send("POST", "/api/v1/admin/reload")
        answer = settle(api, pending, rounds=40)
        settle(api, reload)
        outcome = {p["name"]: p for p in answer.json["processes"]}
        assert outcome["db"]["success"] is True
        assert outcome["app"] == {"name": "app", "success": False,
                                  "error": "no process named 'app' any more (removed by a reload)"}

    def test_body_must_be_empty(self, api):
        """A bulk command takes no options: an unknown body field is a 400."""
        assert api.post("/api/v1/processes/start", body=b'{"wait": false}').status == 400


class TestCoalescing:
    def test_five_restarts_one_child(self, api):
        """Five restarts of one process at once make one restart; all five are answered with it."""
        api.ready()
        pendings = [api.send("POST", "/api/v1/processes/backend/restart") for _ in range(5)]
        answers = [settle(api, p) for p in pendings]
        assert len(api.children("backend")) == 2
        assert {a.json["pid"] for a in answers} == {api.children("backend")[-1].pid}


class TestLogStream:
    _open = staticmethod(openStream)

    def test_new_lines_as_events(self, api):
        """The log stream sends each new output line with its sequence as id and the line as JSON."""
        api.ready()
        child = api.children("backend")[-1]
        child.output(b"old\n")
        response, chunks = self._open(api, "/api/v1/processes/backend/logs/stream")
        assert response.code == 200
        child.output(b"hello\nworld\n", fd=2)
        api.stub.flush()
        text = b"".join(chunks).decode()
        assert "old" not in text
        assert 'id: 2\nevent: line\ndata: {"timestamp"' in text
        messages = [m for m in text.split("\n\n") if m.startswith("id:")]
        lines = [json.loads(m.split("data: ", 1)[1]) for m in messages]
        assert [(l["sequence"], l["text"], l["stream"]) for l in lines] == [
            (2, "hello", "stderr"), (3, "world", "stderr")]

    def test_last_event_id_resumes_within_the_ring(self, api):
        """With Last-Event-ID the lines after it still in the ring come first."""
        api.ready()
        api.children("backend")[-1].output(b"a\nb\nc\n")
        response, chunks = self._open(api, "/api/v1/processes/backend/logs/stream",
                                      {"Last-Event-ID": "1"})
        text = b"".join(chunks).decode()
        assert '"text": "a"' not in text
        assert '"text": "b"' in text and '"text": "c"' in text

    def test_shares_the_client_cap_with_the_event_stream(self):
        """Event and log stream clients count together against admin.max_stream_clients."""
        api = ApiHarness(config(admin="  max_stream_clients: 2"))
        openStream(api, "/api/v1/events/stream")
        openStream(api, "/api/v1/processes/backend/logs/stream")
        answer = api.get("/api/v1/processes/worker/logs/stream")
        assert answer.status == 503

    def test_unknown_process_is_404(self, api):
        """The log stream of an unknown process is a 404."""
        assert api.get("/api/v1/processes/nope/logs/stream").status == 404

    def test_reload_that_removes_the_process_ends_the_stream(self, api):
        """When a reload removes the process, its log stream ends (the client is to reconnect)."""
        api.ready()
        response, chunks = self._open(api, "/api/v1/processes/worker/logs/stream")
        api.rewrite(config().split("  worker:")[0])
        settle(api, api.send("POST", "/api/v1/admin/reload"))
        assert b"".join(chunks).endswith(b": the source of this stream is gone; reconnect\n\n")


class TestQueryEnums:
    def test_unknown_event_type_is_400(self, api):
        """?type= on the events is checked against the documented enum: an unknown value is a 400."""
        answer = api.get("/api/v1/events?type=nonsense")
        assert answer.status == 400
        assert "must be one of" in answer.json["error"]
        assert api.get("/api/v1/events?type=crashed").status == 200
