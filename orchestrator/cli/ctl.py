"""
C{orchestratorctl}: a thin command-line client of the admin API.

It only turns arguments into API requests and answers into text (or,
with C{--json}, passes the API's JSON through); everything it can do, curl
can do too.  Stdlib only, so it runs wherever the orchestrator runs.

Commands that name processes take C{NAME...}, C{all} (every process, in
dependency order) or C{group:G} (the members of group G); without a name
they act on the orchestrator's C{admin.default_process}.

Exit codes, for scripts::

    0  done (also: logs -f / events -f ended by Ctrl-C, or output cut
       short because the reader of a pipe went away, as with | head)
    1  the API refused or the command failed (unknown process or group,
       409 in monitor-only mode or a signal to a stopped process, a start
       that failed, any process of all / group:G that failed, an invalid
       configuration)
    2  usage error (bad arguments)
    3  cannot talk to the API: connection refused, timeout, not an
       orchestrator, or not authorised (401, 403, 421)
    130 interrupted (Ctrl-C) while waiting for an answer
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
from datetime import datetime
from typing import Any, Iterator
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["main", "Client", "CtlError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

DEFAULT_URL = "http://127.0.0.1:8000"


class CtlError(Exception):
    """
    Why a command did not succeed, with the exit code it means and the
    API's answer, if there was one.
    """

    def __init__(self, code: int, message: str, answer: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.answer = answer


class _UnixConnection(http.client.HTTPConnection):
    """
    HTTP over a unix socket (C{admin.listen: unix:/path}).
    """

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """
    Requests to one orchestrator.

    @param url: C{http://host:port}, C{https://...}, or C{unix:/path/to.sock}.
    @param token: the bearer token, or C{None}.
    @param timeout: seconds to wait for an answer (a restart answers once
        the process is ready again).
    """

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url
        self._token = token
        self._timeout = timeout
        if url.startswith("unix:"):
            self._socket = url[len("unix:"):]
            if self._socket.startswith("//"):
                self._socket = self._socket[2:]
            self._scheme, self._netloc, self._prefix = "unix", None, ""
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise CtlError(EXIT_USAGE, f"--url must be http://HOST:PORT, https://... or unix:/PATH, not {url!r}")
            self._scheme, self._netloc, self._prefix = parts.scheme, parts.netloc, parts.path.rstrip("/")

    def _connect(self) -> http.client.HTTPConnection:
        if self._scheme == "unix":
            return _UnixConnection(self._socket, self._timeout)
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._netloc, timeout=self._timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._netloc, timeout=self._timeout)

    def _send(self, method: str, path: str, accept: str, body: Any = None,
              headers: dict | None = None):
        headers = {"Accept": accept, "User-Agent": "orchestratorctl", **(headers or {})}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        connection = self._connect()
        try:
            connection.request(method, self._prefix + path, body=payload, headers=headers)
            return connection, connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            reason = "timed out" if isinstance(e, (socket.timeout, TimeoutError)) else (
                getattr(e, "strerror", None) or str(e) or type(e).__name__)
            raise CtlError(EXIT_UNREACHABLE, f"cannot talk to the orchestrator at {self.url}: {reason}")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """
        One request (with C{body} as JSON, if given); the JSON answer of a
        success.

        @raise CtlError: anything else.
        """
        connection, response = self._send(method, path, "application/json", body)
        try:
            raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise CtlError(EXIT_UNREACHABLE, f"the answer from {self.url} was cut short: {e}")
        finally:
            connection.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            raise CtlError(EXIT_UNREACHABLE, f"{self.url} answered {response.status} with something "
                                             "that is not JSON: is it an orchestrator?")
        if 200 <= response.status < 300:
            return answer
        message = answer.get("error") if isinstance(answer, dict) else None
        message = message or f"HTTP {response.status}"
        if response.status in (401, 403, 421):
            if response.status == 401:
                message += " (set --token or ORCHESTRATOR_ADMIN_TOKEN)"
            raise CtlError(EXIT_UNREACHABLE, message, answer)
        raise CtlError(EXIT_FAILED, message, answer)

    #: The comment the API's event stream ends with when its lifetime
    #: (admin.stream_max_seconds) is up: the client is to reconnect.
    RECONNECT_COMMENT = "reconnect"

    def stream(self, path: str, resume: dict | None = None,
               lastEventId: int | None = None) -> Iterator[dict]:
        """
        Follow a Server-Sent Events route: each event's data, as it comes.

        @param resume: if given, set C{resume["reconnect"]} when the server
            ended the stream asking for a reconnection (its lifetime is up).
        @raise CtlError: the server dropped this client for falling behind
            (C{event: overflow}).
        """
        headers = {"Last-Event-ID": str(lastEventId)} if lastEventId is not None else None
        connection, response = self._send("GET", path, "text/event-stream", headers=headers)
        if response.status != 200:
            raw = response.read()
            connection.close()
            try:
                message = json.loads(raw).get("error")
            except (ValueError, AttributeError):
                message = None
            raise CtlError(EXIT_UNREACHABLE if response.status in (401, 403, 421) else EXIT_FAILED,
                           message or f"HTTP {response.status}")
        connection.sock.settimeout(None)  # an event may be long in coming
        data: list[str] = []
        kind = None
        try:
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith(":") and self.RECONNECT_COMMENT in line and resume is not None:
                    resume["reconnect"] = True
                elif not line and data:
                    body = json.loads("\n".join(data))
                    if kind == "overflow":
                        raise CtlError(EXIT_FAILED, body.get("error") or "dropped by the server")
                    yield body
                    data, kind = [], None
        finally:
            connection.close()


# -- presentation ----------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "-"
    seconds = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts[:2])


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


def _table(rows: list[list[str]], out) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def _statusNote(process: dict) -> str:
    notes = []
    if process.get("gave_up"):
        notes.append("gave up")
    if process.get("next_restart_in") is not None:
        notes.append(f"restart in {process['next_restart_in']:.1f}s")
    exit = process.get("last_exit")
    if exit and process.get("status") in ("crashed", "stopped"):
        notes.append(exit["description"])
    return ", ".join(notes)


def _printStatusTable(processes: list[dict], out) -> None:
    rows = [["NAME", "STATUS", "PID", "UPTIME", "RESTARTS", "HEALTH", "NOTE"]]
    for p in processes:
        rows.append([p["name"], p["status"], p["pid"] or "-", _duration(p["uptime_secs"]),
                     p["restart_count"], p["last_health_check"], _statusNote(p)])
    _table(rows, out)


def _printStatus(process: dict, out) -> None:
    lines = [
        ("name", process["name"]),
        ("status", process["status"] + (" (gave up)" if process.get("gave_up") else "")),
        ("pid", process["pid"] or "-"),
        ("uptime", _duration(process["uptime_secs"])),
        ("restarts", process["restart_count"]),
        ("health", process["last_health_check"]),
    ]
    health = process.get("health")
    if health and health.get("last"):
        lines.append(("last check", health["last"]["reason"]))
    if process.get("last_exit"):
        lines.append(("last exit", process["last_exit"]["description"]))
    if process.get("next_restart_in") is not None:
        lines.append(("next restart", f"in {process['next_restart_in']:.1f}s"))
    for key, value in lines:
        out.write(f"{key + ':':<14}{value}\n")


def _printEvents(events: list[dict], out, header: bool = True) -> None:
    rows = [["TIME", "EVENT", "PROCESS", "PID", "REASON"]] if header else []
    for e in events:
        rows.append([_when(e["timestamp"]), e["type"], e["process"] or "-", e["pid"] or "-", e["reason"]])
    if rows:
        _table(rows, out)


# -- commands ------------------------------------------------------------------------------


def _processPath(name: str, *rest: str) -> str:
    return "/api/v1/processes/" + "/".join([quote(name, safe="")] + list(rest))


def _status(client: Client, args, out) -> Any:
    if args.name:
        answer = client.call("GET", _processPath(args.name))
        if not args.json:
            _printStatus(answer, out)
        return answer
    answer = client.call("GET", "/api/v1/processes")
    if not args.json:
        if answer["processes"]:
            _printStatusTable(answer["processes"], out)
        else:
            out.write("no processes configured\n")
    return answer


def _defaultProcess(client: Client) -> str:
    return client.call("GET", "/api/v1/processes")["default_process"]


def _command(client: Client, args, out) -> Any:
    """
    start|stop|restart [NAME... | all | group:G].
    """
    targets = args.names
    if targets in (["all"],) or (len(targets) == 1 and targets[0].startswith("group:")):
        return _bulk(client, args, out, targets[0])
    if any(t == "all" or t.startswith("group:") for t in targets):
        raise CtlError(EXIT_USAGE, "'all' and 'group:G' stand alone (not mixed with names)")
    query = "?wait=false" if args.no_wait else ""
    if not targets:  # the seed's routes act on admin.default_process
        return _printCommand(client.call("POST", f"/api/v1/admin/backend/{args.command}{query}"),
                             args, out)
    answers, failures = [], []
    for name in targets:
        try:
            answers.append(_printCommand(
                client.call("POST", _processPath(name, args.command) + query), args, out))
        except CtlError as e:
            if e.code != EXIT_FAILED or len(targets) == 1:
                raise
            failures.append(e)
            answers.append(e.answer)
            out.write(f"{name}: ERROR {e}\n")
    if failures:
        raise CtlError(EXIT_FAILED, f"{len(failures)} of {len(targets)} failed",
                       answers if args.json else None)
    return answers[0] if len(answers) == 1 else answers


def _printCommand(answer: dict, args, out) -> dict:
    if not args.json:
        pid = f" (pid {answer['pid']})" if answer.get("pid") else ""
        out.write(f"{answer['message']}{pid}\n")
    return answer


def _bulk(client: Client, args, out, target: str) -> Any:
    if target == "all":
        path = f"/api/v1/processes/{args.command}"
    else:
        path = f"/api/v1/groups/{quote(target[len('group:'):], safe='')}/{args.command}"
    answer = client.call("POST", path)
    if not args.json:
        rows = [["NAME", "RESULT", "STATUS", "PID"]]
        for p in answer["processes"]:
            result = p.get("message") if p["success"] else "ERROR " + p.get("error", "")
            rows.append([p["name"], result, p["status"], p["pid"] or "-"])
        if len(rows) > 1:
            _table(rows, out)
        else:
            out.write("no processes\n")
    if not answer["success"]:
        raise CtlError(EXIT_FAILED, answer["message"], answer if args.json else None)
    return answer


def _signal(client: Client, args, out) -> Any:
    name = args.name or _defaultProcess(client)
    sig = int(args.signal) if args.signal.isdigit() else args.signal.upper()
    answer = client.call("POST", _processPath(name, "signal"), {"signal": sig, "to": args.to})
    if not args.json:
        out.write(f"{answer['message']}\n")
    return answer


def _logs(client: Client, args, out) -> Any:
    name = args.name or _defaultProcess(client)
    if args.follow:
        return _follow(client, _processPath(name, "logs", "stream"), args, out,
                       lambda line: line["text"])
    answer = client.call("GET", _processPath(name, "logs") + f"?lines={args.lines}")
    if not args.json:
        for line in answer["lines"]:
            out.write(line["text"] + "\n")
    return answer


def _follow(client: Client, path: str, args, out, text) -> None:
    """
    Print what a stream sends until Ctrl-C (exit 0), resuming after the
    last message when the server ends the stream asking to reconnect.
    """
    last = None
    resume = {"reconnect": True}
    try:
        while resume.pop("reconnect", False):
            for message in client.stream(path, resume, last):
                out.write((json.dumps(message) if args.json else text(message)) + "\n")
                out.flush()
                last = message.get("sequence", last)
    except KeyboardInterrupt:
        pass
    return None


def _reload(client: Client, args, out) -> Any:
    answer = client.call("POST", "/api/v1/admin/reload")
    if not args.json:
        summary = "; ".join(f"{key} {', '.join(answer[key]) or '-'}"
                            for key in ("added", "removed", "changed", "unchanged"))
        out.write(f"{answer['message']}: {summary}\n")
    return answer


def _events(client: Client, args, out) -> Any:
    query = {"since": args.since, "limit": args.limit}
    if args.process:
        query["process"] = args.process
    if args.follow:
        streamQuery = {"since": args.since} if args.since else {}
        if args.process:
            streamQuery["process"] = args.process
        if not args.json:
            out.write("following events (Ctrl-C to stop)\n")
        try:
            resume = {"reconnect": True}
            while resume.pop("reconnect", False):  # the server ends a stream after a while
                for event in client.stream("/api/v1/events/stream?" + urlencode(streamQuery), resume):
                    if args.json:
                        out.write(json.dumps(event) + "\n")
                    else:
                        _printEvents([event], out, header=False)
                    out.flush()
                    streamQuery["since"] = event.get("sequence", streamQuery.get("since", 0))
        except KeyboardInterrupt:
            pass
        return None
    answer = client.call("GET", "/api/v1/events?" + urlencode(query))
    if not args.json:
        if answer["events"]:
            _printEvents(answer["events"], out)
        else:
            out.write("no events\n")
    return answer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestratorctl",
        allow_abbrev=False,  # (--to of signal is not --token)
        description="Drive an orchestrator through its admin API.",
        epilog="exit codes: 0 done; 1 refused or failed (unknown process, 409, failed start, "
               "invalid configuration); 2 usage error; 3 cannot talk to the API "
               "(connection, timeout, 401/403/421)",
    )
    parser.add_argument("--url", default=os.environ.get("ORCHESTRATOR_URL", DEFAULT_URL),
                        help="the admin API: http://HOST:PORT or unix:/PATH "
                             f"(env ORCHESTRATOR_URL; default {DEFAULT_URL})")
    parser.add_argument("--token", default=None,
                        help="bearer token (env ORCHESTRATOR_ADMIN_TOKEN; prefer it or --token-file: "
                             "a command line is visible to other users)")
    parser.add_argument("--token-file", default=None, help="read the token from this file's first line")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for an answer (default 120: a restart waits for readiness)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = sub.add_parser("status", help="status of every process, or of one")
    status.add_argument("name", nargs="?")
    status.set_defaults(run=_status)
    for verb, text in (("start", "start processes (and wait until they are ready)"),
                       ("stop", "stop processes"),
                       ("restart", "restart processes (and wait until they are ready)")):
        command = sub.add_parser(verb, help=text, description=(
            f"{verb} NAME..., 'all' (every process, in dependency order), 'group:G' (the members "
            "of group G), or, with no name, admin.default_process"))
        command.add_argument("names", nargs="*", metavar="NAME")
        command.add_argument("--no-wait", action="store_true",
                             help="answer at once instead of when the command is done "
                                  "(not for all / group:G, which always wait)")
        command.set_defaults(run=_command)
    signal = sub.add_parser("signal", help="send a signal to a running process (its process group)")
    signal.add_argument("signal", metavar="SIG", help="USR1, SIGHUP, 10... (KILL is refused: use stop)")
    signal.add_argument("name", nargs="?", help="default: admin.default_process")
    signal.add_argument("--to", choices=("group", "process"), default="group",
                        help="the whole process group (default) or the process alone")
    signal.set_defaults(run=_signal)
    logs = sub.add_parser("logs", help="the last lines a process wrote; -f follows new ones")
    logs.add_argument("name", nargs="?", help="default: admin.default_process")
    logs.add_argument("--lines", "-n", type=int, default=100, help="how many (default 100)")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="print new lines as they come, until Ctrl-C (exit 0)")
    logs.set_defaults(run=_logs)
    reload = sub.add_parser("reload", help="re-read the configuration file and apply it")
    reload.set_defaults(run=_reload)
    events = sub.add_parser("events", help="recent events")
    events.add_argument("--since", type=int, default=0, help="only events after this sequence number")
    events.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    events.add_argument("--process", help="only events of this process")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing events as they happen")
    events.set_defaults(run=_events)
    for command in sub.choices.values():  # --json after the command too (status --json)
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                             help="print the API's JSON answer")
    return parser


def _token(args) -> str | None:
    if args.token:
        return args.token
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                return f.readline().strip() or None
        except OSError as e:
            raise CtlError(EXIT_USAGE, f"cannot read --token-file {args.token_file}: {e.strerror}")
    return os.environ.get("ORCHESTRATOR_ADMIN_TOKEN") or None


def main(argv: list[str] | None = None, out=None, err=None) -> int:
    """
    Run one command.

    @return: the exit code (see the module docstring).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0)
    if getattr(args, "lines", 0) < 0 or (args.command == "events" and (args.since < 0 or args.limit < 1)):
        parser.print_usage(err)
        err.write("orchestratorctl: --lines, --since must be >= 0 and --limit >= 1\n")
        return EXIT_USAGE
    try:
        try:
            return _run(args, out, err)
        finally:
            out.flush()
    except BrokenPipeError:
        # The reader of a pipe went away (| head): nothing more to say, and
        # nothing for the interpreter to complain about when it flushes.
        _silence(out)
        return EXIT_OK


def _silence(out) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass  # not a real file (tests)


def _run(args, out, err) -> int:
    try:
        client = Client(args.url, _token(args), args.timeout)
        answer = args.run(client, args, out)
    except KeyboardInterrupt:
        err.write("orchestratorctl: interrupted\n")
        return EXIT_INTERRUPTED
    except CtlError as e:
        if args.json and e.answer is not None:
            out.write(json.dumps(e.answer, indent=2) + "\n")
        err.write(f"orchestratorctl: {e}\n")
        problems = e.answer.get("problems") if isinstance(e.answer, dict) else None
        for problem in problems or ():
            err.write(f"  {problem}\n")
        return e.code
    if args.json and answer is not None:
        out.write(json.dumps(answer, indent=2) + "\n")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
