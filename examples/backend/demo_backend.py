#!/usr/bin/env python3
"""Demo HTTP backend: a stand-in for a Go HTTP service, for supervisor tests.

Stdlib only (Python 3.11+). The orchestrator's integration tests and benchmarks
supervise this script as if it were a real backend, and make it misbehave on
demand: crash, hang its health check, ignore SIGTERM, leave grandchildren.

Usage::

    python3 examples/backend/demo_backend.py [--port N] [--host H]

Start-up options
    --port N / env PORT     port to listen on (argv wins over env; default 3000;
                            0 picks a free port, the chosen one is printed)
    --host H                address to bind (default 127.0.0.1)

Once listening it prints exactly one line to stdout (flushed)::

    demo backend listening on http://HOST:PORT (pid N)

and then logs every request as one line on stderr.

Endpoints (other paths answer 404 JSON, other methods 405 JSON; GET routes
also answer HEAD, without a body)
    GET  /                  200 {"service": "demo-backend", "pid", "grandchild_pids"}
    GET  /health            200 {"status": "ok", "pid", "uptime_secs", "grandchild_pids"};
                            503 {"status": "failing"} in "fail" mode;
                            503 {"status": "starting"} during DEMO_READY_DELAY;
                            never answers in "hang" mode (the handler thread
                            sleeps up to an hour, then drops the connection)
    POST /health/ok         restore normal health answers
    POST /health/fail       make /health answer 503
    POST /health/hang       make /health hang
    POST /crash?code=N      answer 200 {"crashing": true}, then os._exit(N)
                            ~50 ms later (default code 1)
    POST /ignore-sigterm    set SIGTERM to SIG_IGN (only SIGKILL stops it then)
    POST /spawn-grandchild  start a grandchild (a sleeping Python) in our own
                            process group; answers {"grandchild_pid": N}
    POST /write-output?lines=N
                            print "line 1" .. "line N" to stdout; answers
                            {"written": N}

Environment knobs (read once at start-up; "start" means process start)
    DEMO_START_DELAY=SECS       sleep this long before binding the port
    DEMO_READY_DELAY=SECS       /health answers 503 until SECS after start
                                (the port is listening meanwhile)
    DEMO_HEALTH=ok|fail|hang    initial /health mode (default ok)
    DEMO_CRASH_AFTER=SECS       os._exit(DEMO_CRASH_CODE) SECS after start
    DEMO_CRASH_CODE=N           exit code for DEMO_CRASH_AFTER (default 1)
    DEMO_IGNORE_SIGTERM=1       set SIGTERM to SIG_IGN from the very start
    DEMO_EXIT_CODE_ON_TERM=N    exit code after a clean SIGTERM stop (default 0)
    DEMO_SPAWN_GRANDCHILD=1     start one grandchild right after binding
    DEMO_GRANDCHILD_PIDFILE=P   write each new grandchild's pid to file P
                                (atomically; the latest one wins)

Signals: SIGTERM (and SIGINT) stop it cleanly: it prints
``demo backend stopping (SIGTERM)`` to stdout, closes the listening socket and
exits with 0 (or DEMO_EXIT_CODE_ON_TERM). SIGUSR1 and SIGUSR2 change nothing
but print ``demo backend received SIGUSR1 (pid N)`` to stdout (what the
orchestrator's signal route is tested with). Grandchildren are not killed on the
way out - reaping them is the supervisor's job (kill the process group).
Grandchildren get /dev/null for stdio so they do not hold the supervisor's
output pipes open, and inherit no file descriptors (so not the listening port).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

SERVICE = "demo-backend"
DEFAULT_PORT = 3000
DEFAULT_HOST = "127.0.0.1"
HEALTH_MODES = ("ok", "fail", "hang")
HANG_SECS = 3600.0  # how long a hanging /health handler sleeps
CRASH_GRACE_SECS = 0.05  # lets the /crash answer get out before exiting
GRANDCHILD_ARGV = [sys.executable, "-c", "import time; time.sleep(3600)"]


def say(message: str) -> None:
    """Print one line to stdout and flush (the supervisor captures it)."""
    print(message, file=sys.stdout, flush=True)


def log(message: str) -> None:
    """Print one line to stderr and flush."""
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    """Everything read from argv and the environment at start-up."""

    host: str
    port: int
    start_delay: float
    ready_delay: float
    health_mode: str
    crash_after: float | None
    crash_code: int
    ignore_sigterm: bool
    exit_code_on_term: int
    spawn_grandchild: bool
    grandchild_pidfile: str | None


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_config(argv: list[str] | None, environ: dict[str, str]) -> Config:
    """Build a Config from argv (which wins) and the environment."""
    parser = argparse.ArgumentParser(
        description="Demo HTTP backend for orchestrator tests (see module docstring)."
    )
    parser.add_argument("--port", type=int, default=None, help="port (env PORT, default 3000)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="bind address (default 127.0.0.1)")
    args = parser.parse_args(argv)

    def number(name: str, kind: Callable[[str], Any], default: Any) -> Any:
        raw = environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            parser.error(f"{name}={raw!r} is not a valid {kind.__name__}")
        if isinstance(value, float) and value < 0:
            parser.error(f"{name}={raw!r} must not be negative")
        return value

    port = args.port if args.port is not None else number("PORT", int, DEFAULT_PORT)
    health_mode = environ.get("DEMO_HEALTH", "ok").strip().lower() or "ok"
    if health_mode not in HEALTH_MODES:
        parser.error(f"DEMO_HEALTH={health_mode!r} must be one of {', '.join(HEALTH_MODES)}")
    return Config(
        host=args.host,
        port=port,
        start_delay=number("DEMO_START_DELAY", float, 0.0),
        ready_delay=number("DEMO_READY_DELAY", float, 0.0),
        health_mode=health_mode,
        crash_after=number("DEMO_CRASH_AFTER", float, None),
        crash_code=number("DEMO_CRASH_CODE", int, 1),
        ignore_sigterm=_flag(environ.get("DEMO_IGNORE_SIGTERM")),
        exit_code_on_term=number("DEMO_EXIT_CODE_ON_TERM", int, 0),
        spawn_grandchild=_flag(environ.get("DEMO_SPAWN_GRANDCHILD")),
        grandchild_pidfile=environ.get("DEMO_GRANDCHILD_PIDFILE") or None,
    )


class Backend:
    """State shared by the request threads and the main thread.

    Signal dispositions can only be changed from the main thread, so request
    threads and signal handlers talk to it through ``control`` (a SimpleQueue,
    whose ``put`` is safe to call from a signal handler).
    """

    def __init__(self, config: Config, started: float) -> None:
        self.config = config
        self.started = started  # time.monotonic() at process start
        self.control: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._health_mode = config.health_mode
        self._grandchildren: list[subprocess.Popen[bytes]] = []

    def uptime(self) -> float:
        return time.monotonic() - self.started

    @property
    def health_mode(self) -> str:
        with self._lock:
            return self._health_mode

    def set_health_mode(self, mode: str) -> None:
        assert mode in HEALTH_MODES
        with self._lock:
            self._health_mode = mode
        log(f"demo backend: health mode -> {mode}")

    def ready_in(self) -> float:
        """Seconds until DEMO_READY_DELAY has passed (0 once ready)."""
        return max(0.0, self.config.ready_delay - self.uptime())

    def spawn_grandchild(self) -> int:
        """Start a sleeping grandchild in our process group; return its pid."""
        child = subprocess.Popen(
            GRANDCHILD_ARGV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with self._lock:
            self._grandchildren.append(child)
        if self.config.grandchild_pidfile:
            path = self.config.grandchild_pidfile
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(f"{child.pid}\n")
            os.replace(tmp, path)
        log(f"demo backend: spawned grandchild pid {child.pid}")
        return child.pid

    def grandchild_pids(self) -> list[int]:
        """Pids of grandchildren still running (exited ones are reaped)."""
        with self._lock:
            self._grandchildren = [c for c in self._grandchildren if c.poll() is None]
            return [c.pid for c in self._grandchildren]

    def crash_later(self, code: int, delay: float) -> None:
        """os._exit(code) after ``delay`` seconds, from a timer thread."""

        def crash() -> None:
            log(f"demo backend crashing (exit {code})")
            sys.stdout.flush()
            os._exit(code)

        timer = threading.Timer(delay, crash)
        timer.daemon = True
        timer.start()

    def request_ignore_sigterm(self, timeout: float = 5.0) -> bool:
        """Ask the main thread to set SIGTERM to SIG_IGN; wait until it has."""
        done = threading.Event()
        self.control.put(("ignore-sigterm", done))
        return done.wait(timeout)


def ignore_sigterm() -> None:
    """Set SIGTERM to SIG_IGN (main thread only)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log("demo backend: ignoring SIGTERM")


class Handler(BaseHTTPRequestHandler):
    """Routes requests to ``route_*`` methods via ROUTES."""

    server: "DemoServer"
    server_version = "demo-backend/1.0"
    protocol_version = "HTTP/1.1"  # keep-alive, like a Go net/http server
    timeout = 120  # idle keep-alive connections are dropped after this

    # path -> {method: handler method name}
    ROUTES: dict[str, dict[str, str]] = {
        "/": {"GET": "route_root"},
        "/health": {"GET": "route_health"},
        "/health/ok": {"POST": "route_health_ok"},
        "/health/fail": {"POST": "route_health_fail"},
        "/health/hang": {"POST": "route_health_hang"},
        "/crash": {"POST": "route_crash"},
        "/ignore-sigterm": {"POST": "route_ignore_sigterm"},
        "/spawn-grandchild": {"POST": "route_spawn_grandchild"},
        "/write-output": {"POST": "route_write_output"},
    }

    @property
    def backend(self) -> Backend:
        return self.server.backend

    # -- plumbing ---------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log(f"demo backend: {self.address_string()} {format % args}")

    def send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _drain_body(self) -> None:
        """Read and discard any request body so keep-alive stays in sync."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # not worth decoding chunked bodies
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
            self.close_connection = True
        if length > 0:
            self.rfile.read(length)

    def _int_param(self, name: str, default: int, minimum: int | None = None) -> int:
        values = self.query.get(name)
        if not values:
            return default
        value = int(values[-1])  # ValueError -> 400 in dispatch
        if minimum is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}")
        return value

    def dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self._drain_body()
        methods = self.ROUTES.get(url.path)
        if methods is None:
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": url.path})
            return
        # Like Go's net/http mux, a GET route also answers HEAD (without a body).
        name = methods.get("GET" if self.command == "HEAD" else self.command)
        if name is None:
            allowed = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
            self.send_json(
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": "method not allowed", "method": self.command, "allowed": allowed},
                headers={"Allow": ", ".join(allowed)},
            )
            return
        try:
            getattr(self, name)()
        except ValueError as exc:
            self.send_json(HTTPStatus.BAD_REQUEST, {"error": f"bad request: {exc}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = dispatch

    # -- routes -------------------------------------------------------------

    def route_root(self) -> None:
        self.send_json(
            HTTPStatus.OK,
            {"service": SERVICE, "pid": os.getpid(), "grandchild_pids": self.backend.grandchild_pids()},
        )

    def route_health(self) -> None:
        backend = self.backend
        mode = backend.health_mode
        if mode == "hang":
            # Never answer: park this handler thread, then drop the connection.
            self.close_connection = True
            time.sleep(HANG_SECS)
            return
        body: dict[str, Any] = {"pid": os.getpid(), "grandchild_pids": backend.grandchild_pids()}
        if mode == "fail":
            self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "failing", **body})
            return
        ready_in = backend.ready_in()
        if ready_in > 0:
            self.send_json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"status": "starting", "ready_in_secs": round(ready_in, 3), **body},
            )
            return
        self.send_json(HTTPStatus.OK, {"status": "ok", "uptime_secs": backend.uptime(), **body})

    def _set_health(self, mode: str) -> None:
        self.backend.set_health_mode(mode)
        self.send_json(HTTPStatus.OK, {"health_mode": mode})

    def route_health_ok(self) -> None:
        self._set_health("ok")

    def route_health_fail(self) -> None:
        self._set_health("fail")

    def route_health_hang(self) -> None:
        self._set_health("hang")

    def route_crash(self) -> None:
        code = self._int_param("code", 1, minimum=0)
        self.close_connection = True
        self.send_json(HTTPStatus.OK, {"crashing": True, "code": code})
        self.backend.crash_later(code, CRASH_GRACE_SECS)

    def route_ignore_sigterm(self) -> None:
        if not self.backend.request_ignore_sigterm():
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "main thread did not respond"})
            return
        self.send_json(HTTPStatus.OK, {"ignoring_sigterm": True})

    def route_spawn_grandchild(self) -> None:
        pid = self.backend.spawn_grandchild()
        self.send_json(HTTPStatus.OK, {"grandchild_pid": pid})

    def route_write_output(self) -> None:
        lines = self._int_param("lines", 1, minimum=0)
        if lines:
            sys.stdout.write("".join(f"line {i}\n" for i in range(1, lines + 1)))
            sys.stdout.flush()
        self.send_json(HTTPStatus.OK, {"written": lines})


class DemoServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can rebind at once and never waits for handlers."""

    allow_reuse_address = True  # a restarted backend can rebind immediately
    daemon_threads = True  # hanging handlers must not block exit

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.backend = backend
        super().__init__(address, Handler)


def serve_commands(backend: Backend, until: float | None, server: DemoServer | None) -> int | None:
    """Run main-thread commands until ``until`` (monotonic) or a stop request.

    Returns the exit code if a stop was requested, else None at the deadline.
    """
    while True:
        timeout = 0.5
        if until is not None:
            timeout = min(timeout, until - time.monotonic())
            if timeout <= 0:
                return None
        try:
            command, arg = backend.control.get(timeout=timeout)
        except queue.Empty:
            continue
        if command == "ignore-sigterm":
            ignore_sigterm()
            arg.set()
        elif command == "signal":
            say(f"demo backend received {arg} (pid {os.getpid()})")
        elif command == "stop":
            say(f"demo backend stopping ({arg})")
            if server is not None:
                server.shutdown()
                server.server_close()
            return backend.config.exit_code_on_term


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    config = parse_config(argv, dict(os.environ))
    backend = Backend(config, started)

    def on_signal(signum: int, _frame: Any) -> None:
        backend.control.put(("stop", signal.Signals(signum).name))

    def on_user_signal(signum: int, _frame: Any) -> None:
        # (Printed by the main loop: a print inside a handler can re-enter one.)
        backend.control.put(("signal", signal.Signals(signum).name))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_user_signal)
    signal.signal(signal.SIGUSR2, on_user_signal)
    if config.ignore_sigterm:
        ignore_sigterm()
    if config.crash_after is not None:
        backend.crash_later(config.crash_code, config.crash_after)

    if config.start_delay > 0:
        log(f"demo backend: delaying start by {config.start_delay}s")
        code = serve_commands(backend, started + config.start_delay, None)
        if code is not None:
            return code

    server = DemoServer((config.host, config.port), backend)
    if config.spawn_grandchild:
        backend.spawn_grandchild()
    threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True).start()
    host, port = server.server_address[:2]
    url_host = f"[{host}]" if ":" in host else host
    say(f"demo backend listening on http://{url_host}:{port} (pid {os.getpid()})")
    code = serve_commands(backend, None, server)
    assert code is not None
    return code


if __name__ == "__main__":
    sys.exit(main())
