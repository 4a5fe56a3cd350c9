"""
C{orchestratorctl} against the real API code: a real HTTP server (stdlib,
on 127.0.0.1 or a unix socket) hands each request to an in-memory
orchestrator (L{tests.test_api.ApiHarness}) whose fake children die when
signalled, so commands complete as they would for real, in milliseconds.
"""

from __future__ import annotations

import io
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from orchestrator.cli import ctl
from tests.harness import freePort
from tests.test_api import TOKEN, ApiHarness, config


class _Bridge(BaseHTTPRequestHandler):
    """
    Forward one request to the harness, and play the world until it is answered.
    """

    protocol_version = "HTTP/1.1"

    def _forward(self):
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
        server.seen.append((self.command, self.path, dict(self.headers)))
        if server.canned is not None:  # one answer for every request, or a list of them in turn
            canned = server.canned.pop(0) if isinstance(server.canned, list) else server.canned
            status, contentType, payload = canned
        else:
            with server.lock:
                answer = server.harness.autopilot(self.command, self.path, headers, body)
            status, contentType, payload = answer.status, answer.header("content-type"), answer.text.encode()
        self.send_response(status)
        self.send_header("Content-Type", contentType)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _forward

    def log_message(self, *args):
        pass


class _TCPServer(HTTPServer):
    pass


class _UnixServer(socketserver.UnixStreamServer):
    def get_request(self):
        request, _ = super().get_request()
        return request, ("unix", 0)


class Harness(ApiHarness):
    def autopilot(self, method, path, headers, body):
        """
        Send a request; until it is answered, children that were sent a
        signal exit and time passes.
        """
        pending = self.send(method, path, headers=headers, body=body, token=False)
        for _ in range(100):
            if pending.done():
                break
            for child in self.reactor.spawned:
                if child.alive and child.signals:
                    child.exited(0)
            self.advance(0.25)
        return pending.answer()


@pytest.fixture
def server(request):
    servers = []

    def start(harness=None, unix: str | None = None, canned=None):
        if unix:
            srv = _UnixServer(unix, _Bridge)
        else:
            srv = _TCPServer(("127.0.0.1", 0), _Bridge)
        srv.harness = harness or Harness()
        srv.lock = threading.Lock()
        srv.seen = []
        srv.canned = canned
        srv.url = f"unix:{unix}" if unix else f"http://127.0.0.1:{srv.server_address[1]}"
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def run(srv, *args, token: str | None = TOKEN):
    out, err = io.StringIO(), io.StringIO()
    argv = ["--url", srv.url] + (["--token", token] if token else []) + list(args)
    code = ctl.main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _cleanEnvironment(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_URL", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_ADMIN_TOKEN", raising=False)


# -- commands ----------------------------------------------------------------------------------


def test_status_table(server):
    """status prints one row per process: name, status, pid, uptime, restarts, health."""
    srv = server()
    srv.harness.ready()
    srv.harness.advance(65)
    code, out, err = run(srv, "status")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "PID", "UPTIME", "RESTARTS", "HEALTH", "NOTE"]
    assert lines[1].split() == ["backend", "running", "1001", "1m5s", "0", "healthy"]
    assert lines[2].split() == ["worker", "running", "1002", "1m5s", "0", "unknown"]
    assert srv.seen[0][:2] == ("GET", "/api/v1/processes")
    assert srv.seen[0][2]["Authorization"] == f"Bearer {TOKEN}"


def test_status_of_one(server):
    """status NAME prints the process's details."""
    srv = server()
    srv.harness.ready()
    code, out, _ = run(srv, "status", "backend")
    assert code == 0
    assert "status:       running\n" in out
    assert "pid:          1001\n" in out
    assert "last check:   ok\n" in out


def test_json_passes_the_answer_through(server):
    """--json prints the API's answer as JSON."""
    srv = server()
    code, out, _ = run(srv, "--json", "status", "backend")
    assert code == 0
    assert json.loads(out)["name"] == "backend"


def test_restart(server):
    """restart NAME waits for the restart and prints the message with the new pid."""
    srv = server()
    srv.harness.ready()
    code, out, _ = run(srv, "restart", "backend")
    assert code == 0
    pid = srv.harness.orchestrator.processes["backend"].pid
    assert out == f"Backend restarted successfully (pid {pid})\n"
    assert srv.seen[-1][:2] == ("POST", "/api/v1/processes/backend/restart")


def test_stop_and_start(server):
    """stop and start NAME print the API's messages."""
    srv = server()
    srv.harness.ready("worker")
    assert run(srv, "stop", "worker")[:2] == (0, "Worker stopped successfully\n")
    code, out, _ = run(srv, "start", "worker")
    assert code == 0
    assert out.startswith("Worker started successfully (pid ")


def test_no_wait(server):
    """--no-wait asks the API not to wait."""
    srv = server()
    srv.harness.ready()
    code, out, _ = run(srv, "restart", "backend", "--no-wait")
    assert (code, out.split(" (pid")[0]) == (0, "Backend restart requested")
    assert srv.seen[-1][1] == "/api/v1/processes/backend/restart?wait=false"


def test_logs(server):
    """logs NAME --lines N prints the last N lines' text."""
    srv = server()
    srv.harness.children("backend")[-1].output(b"one\ntwo\nthree\n")
    code, out, _ = run(srv, "logs", "backend", "--lines", "2")
    assert (code, out) == (0, "two\nthree\n")
    assert srv.seen[-1][1] == "/api/v1/processes/backend/logs?lines=2"


def test_reload(server):
    """reload prints what changed."""
    srv = server()
    code, out, _ = run(srv, "reload")
    assert (code, out) == (0, "Configuration reloaded: added -; removed -; changed -; unchanged backend, worker\n")


def test_reload_invalid(server):
    """An invalid configuration exits 1 and lists every problem on stderr."""
    srv = server()
    srv.harness.rewrite("processes:\n  backend:\n    command: 3\n    restart: {max_attempts: -1}\n")
    code, out, err = run(srv, "reload")
    assert code == 1
    assert err.startswith("orchestratorctl: invalid configuration (")
    assert "command" in err and "max_attempts" in err


def test_events(server):
    """events prints recent events, filtered by --process."""
    srv = server()
    srv.harness.ready()
    code, out, _ = run(srv, "events", "--process", "backend")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["TIME", "EVENT", "PROCESS", "PID", "REASON"]
    assert [row[2] for row in rows[1:]] == ["starting", "running"]
    assert srv.seen[-1][1] == "/api/v1/events?since=0&limit=100&process=backend"


def test_events_follow(server):
    """events --follow prints each streamed event until the stream ends."""
    event = {"type": "crashed", "process": "backend", "pid": 7, "reason": "exit code 1",
             "timestamp": 0.0, "sequence": 3}
    stream = ("retry: 2000\n\n: keep-alive\n\n"
              f"id: 3\nevent: crashed\ndata: {json.dumps(event)}\n\n").encode()
    srv = server(canned=(200, "text/event-stream", stream))
    code, out, _ = run(srv, "--json", "events", "--follow", "--since", "2")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [event]
    assert srv.seen[-1][1] == "/api/v1/events/stream?since=2"


def test_events_follow_overflow(server):
    """events --follow exits 1 with the server's reason when it is dropped for falling behind."""
    stream = ('retry: 2000\n\nevent: overflow\ndata: {"success": false, "error": "this client fell '
              'behind"}\n\n').encode()
    srv = server(canned=(200, "text/event-stream", stream))
    code, out, err = run(srv, "events", "--follow")
    assert code == 1
    assert err == "orchestratorctl: this client fell behind\n"


def test_events_follow_reconnects_when_asked(server):
    """When the stream ends saying 'reconnect' (its lifetime is up), --follow resumes after the last event."""
    event = {"type": "crashed", "process": "backend", "pid": 7, "reason": "exit code 1",
             "timestamp": 0.0, "sequence": 3}
    ending = ("retry: 2000\n\n"
              f"id: 3\nevent: crashed\ndata: {json.dumps(event)}\n\n"
              ": this stream ends after admin.stream_max_seconds; reconnect\n\n").encode()
    srv = server(canned=[(200, "text/event-stream", ending), (200, "text/event-stream", b"retry: 2000\n\n")])
    code, out, _ = run(srv, "--json", "events", "--follow")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [event]
    assert [seen[1] for seen in srv.seen] == ["/api/v1/events/stream?", "/api/v1/events/stream?since=3"]


# -- exit codes ----------------------------------------------------------------------------------


def test_unknown_process_exits_1(server):
    """A 404 (unknown process) exits 1 with the API's error."""
    code, out, err = run(server(), "restart", "nope")
    assert (code, out, err) == (1, "", "orchestratorctl: no process named 'nope'\n")


def test_monitor_only_exits_1(server):
    """A 409 (monitor-only) exits 1; --json still prints the error answer."""
    srv = server(Harness(config(enabled=False)))
    code, out, err = run(srv, "--json", "start", "backend")
    assert code == 1
    assert json.loads(out)["success"] is False
    assert "monitor-only" in err


def test_failed_start_exits_1(server, tmp_path):
    """A start that fails exits 1 with the seed's message."""
    harness = Harness(config().replace('["{python}", "-c", "pass"]\n    url', '["/bin/false"]\n    url', 1),
                      probe=False)
    srv = server(harness)
    run(srv, "stop", "backend")
    code, _, err = run(srv, "start", "backend")
    assert code == 1
    assert err.startswith("orchestratorctl: Failed to start backend: ")


def test_bad_token_exits_3(server):
    """A wrong or missing token exits 3 and says how to give one."""
    srv = server()
    code, _, err = run(srv, "status", token="wrong")
    assert (code, err) == (3, "orchestratorctl: invalid token (set --token or ORCHESTRATOR_ADMIN_TOKEN)\n")
    code, _, err = run(srv, "status", token=None)
    assert code == 3
    assert "ORCHESTRATOR_ADMIN_TOKEN" in err


def test_nothing_listening_exits_3():
    """Connection refused exits 3 naming the URL."""
    url = f"http://127.0.0.1:{freePort()}"
    err = io.StringIO()
    assert ctl.main(["--url", url, "status"], out=io.StringIO(), err=err) == 3
    assert err.getvalue().startswith(f"orchestratorctl: cannot talk to the orchestrator at {url}: ")


def test_not_an_orchestrator_exits_3(server):
    """An answer that is not JSON exits 3."""
    srv = server(canned=(200, "text/html", b"<html>hello</html>"))
    code, _, err = run(srv, "status")
    assert code == 3
    assert "is it an orchestrator?" in err


@pytest.mark.parametrize("argv", [[], ["start", "all", "x"], ["signal"], ["logs", "x", "--lines", "-1"], ["frob"],
                                  ["--url", "ftp://x", "status"], ["events", "--limit", "0"]])
def test_usage_errors_exit_2(argv, capsys):
    """Bad arguments exit 2."""
    assert ctl.main(argv, out=io.StringIO(), err=io.StringIO()) == 2


def test_help_exits_0(capsys):
    """--help prints usage with the exit codes and exits 0."""
    assert ctl.main(["--help"]) == 0
    assert "exit codes" in capsys.readouterr().out


# -- where to and who ------------------------------------------------------------------------------


def test_environment(server, monkeypatch):
    """ORCHESTRATOR_URL and ORCHESTRATOR_ADMIN_TOKEN are used without options."""
    srv = server()
    monkeypatch.setenv("ORCHESTRATOR_URL", srv.url)
    monkeypatch.setenv("ORCHESTRATOR_ADMIN_TOKEN", TOKEN)
    assert ctl.main(["status"], out=io.StringIO(), err=io.StringIO()) == 0
    assert srv.seen[-1][2]["Authorization"] == f"Bearer {TOKEN}"


def test_token_file(server, tmp_path):
    """--token-file reads the token from the file's first line."""
    srv = server()
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert run(srv, "--token-file", str(path), "status", token=None)[0] == 0


def test_unix_socket_url(server, tmp_path):
    """--url unix:/path talks HTTP over the unix socket."""
    srv = server(unix=str(tmp_path / "api.sock"))
    code, out, _ = run(srv, "status", "worker")
    assert code == 0
    assert "name:         worker\n" in out


# -- the operator's toolbox -----------------------------------------------------------------------


def test_restart_group(server):
    """restart group:G restarts the group's members and prints a table of outcomes."""
    srv = server()
    srv.harness.ready()
    srv.harness.ready("worker")
    code, out, _ = run(srv, "restart", "group:batch")
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "RESULT", "STATUS", "PID"]
    assert out.splitlines()[1].startswith("worker")
    assert srv.seen[-1][:2] == ("POST", "/api/v1/groups/batch/restart")


def test_stop_all_and_failures_exit_1(server):
    """stop all stops every process; in monitor-only mode every refusal is listed and it exits 1."""
    srv = server()
    code, out, _ = run(srv, "stop", "all")
    assert code == 0 and srv.seen[-1][1] == "/api/v1/processes/stop"
    refused = server(Harness(config(enabled=False)))
    code, out, err = run(refused, "stop", "all")
    assert code == 1
    assert out.count("ERROR cannot stop") == 2
    assert "0 of 2 succeeded" in err


def test_several_names(server):
    """stop NAME NAME acts on each in turn; an unknown one is reported and the exit code is 1."""
    srv = server()
    code, out, err = run(srv, "stop", "worker", "nope", "backend")
    assert code == 1
    assert [seen[1] for seen in srv.seen] == ["/api/v1/processes/worker/stop", "/api/v1/processes/nope/stop",
                                             "/api/v1/processes/backend/stop"]
    assert "nope: ERROR no process named 'nope'" in out


def test_default_process(server):
    """Without a name, restart acts on admin.default_process (the seed's route)."""
    srv = server()
    srv.harness.ready()
    code, out, _ = run(srv, "restart")
    assert code == 0 and out.startswith("Backend restarted successfully")
    assert srv.seen[-1][1] == "/api/v1/admin/backend/restart"


def test_signal(server):
    """signal SIG NAME posts the signal and prints the API's message; a refused signal exits 1."""
    srv = server()
    srv.harness.ready()
    code, out, _ = run(srv, "signal", "usr1", "backend")
    assert (code, out) == (0, "SIGUSR1 sent to Backend's process group\n")
    assert srv.harness.children("backend")[-1].signals == [10]
    code, _, err = run(srv, "signal", "KILL", "backend")
    assert code == 1 and "use stop" in err


def test_signal_default_process_to_the_process(server):
    """signal SIG without a name goes to admin.default_process; --to process signals it alone."""
    srv = server()
    srv.harness.ready()
    code, _, _ = run(srv, "signal", "HUP", "--to", "process")
    assert code == 0
    assert srv.harness.children("backend")[-1].signals == [("process", 1)]


def test_status_json_after_the_command(server):
    """status --json prints the API's answer."""
    srv = server()
    code, out, _ = run(srv, "status", "--json")
    assert code == 0
    assert [p["name"] for p in json.loads(out)["processes"]] == ["backend", "worker"]


def test_logs_follow_prints_lines(server):
    """logs NAME -f prints each streamed line's text and resumes with Last-Event-ID when asked to reconnect."""
    line = {"timestamp": 0.0, "stream": "stdout", "pid": 7, "text": "hello", "sequence": 4}
    first = ("retry: 2000\n\n"
             f"id: 4\nevent: line\ndata: {json.dumps(line)}\n\n"
             ": this stream ends after admin.stream_max_seconds; reconnect\n\n").encode()
    srv = server(canned=[(200, "text/event-stream", first), (200, "text/event-stream", b"retry: 2000\n\n")])
    code, out, _ = run(srv, "logs", "backend", "-f")
    assert (code, out) == (0, "hello\n")
    assert [seen[1] for seen in srv.seen] == ["/api/v1/processes/backend/logs/stream"] * 2
    assert srv.seen[-1][2].get("Last-Event-ID") == "4"


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_pipe_is_quiet(server):
    """A reader that went away (| head) ends the command quietly with exit 0, no traceback."""
    srv = server()
    err = io.StringIO()
    argv = ["--url", srv.url, "--token", TOKEN, "status"]
    assert ctl.main(argv, out=_ClosedPipe(), err=err) == 0
    assert err.getvalue() == ""
