"""
A closed-loop load generator for circus's ZeroMQ API, the counterpart of
C{bench/api.py}'s C{load()} for HTTP: C{workers} processes, each with
C{connections} threads, each thread one ZeroMQ C{DEALER} socket (what
C{circus.client.CircusClient} uses) sending the next command as soon as the
previous answer arrived, for C{duration} seconds after C{warmup}.

The workers run with the circus venv's Python (C{bench/.venv-circus}), so
pyzmq comes from there; the driver (L{load}, L{waitActive}) runs in the
bench's own Python and only starts them.  The answers are checked: one
with C{"status": "error"} counts as an error, one to an earlier call is
skipped by its id, and a socket that waited C{TIMEOUT} seconds for its
answer is replaced (an error and a reconnect), so a lost reply never
stalls a thread.

Usage (internal): PYTHON _circusload.py --worker SPEC | --wait-active SPEC
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(HERE))
TIMEOUT = 10.0


def circusPython(circusd: str) -> str:
    """
    The Python of the venv that holds C{circusd}.
    """
    return os.path.join(os.path.dirname(circusd), "python")


# -- the driver (bench Python, no pyzmq) ---------------------------------------------------

def load(python: str, endpoint: str, command: dict, workers: int, connections: int,
         warmup: float, duration: float) -> dict:
    """
    Run the workers and merge their results, in the shape of
    C{bench/api.py}'s C{load()}: requests, rps, errors, reconnects and the
    latency summary.
    """
    from api import runWorkers

    spec = json.dumps({"endpoint": endpoint, "command": command, "connections": connections,
                       "warmup": warmup, "duration": duration})
    return runWorkers([python, HERE, "--worker", spec], workers, warmup + duration + 60, duration)


def waitActive(python: str, endpoint: str, names: int, timeout: float) -> bool:
    """
    Whether circus's C{status} command says C{names} watchers are
    C{active} within C{timeout} seconds (one helper process that polls, so
    pyzmq is imported once).
    """
    spec = json.dumps({"endpoint": endpoint, "names": names, "timeout": timeout})
    try:
        done = subprocess.run([python, HERE, "--wait-active", spec], capture_output=True, text=True,
                              timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


# -- the circus side (circus venv Python) ----------------------------------------------------

def _socket(context, endpoint: str):
    import zmq

    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    return socket


def _call(socket, command: dict, timeout: float) -> tuple[dict, int] | None:
    """
    One command and its answer with the answer's size in bytes (C{None}
    after C{timeout} seconds).  Answers to earlier, timed-out calls are
    skipped by their id.
    """
    import zmq

    callId = uuid.uuid4().hex
    socket.send(json.dumps(dict(command, id=callId)).encode())
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not socket.poll(int(left * 1000), zmq.POLLIN):
            return None
        raw = socket.recv()
        answer = json.loads(raw)
        if answer.get("id") == callId:
            return answer, len(raw)


class _Client:
    """
    One C{DEALER} socket asking the same command again and again; a socket
    whose answer did not come within C{TIMEOUT} is replaced.
    """

    def __init__(self, endpoint: str, command: dict) -> None:
        import zmq

        self.context = zmq.Context.instance()
        self.endpoint, self.command = endpoint, command
        self.socket = _socket(self.context, endpoint)
        self.reconnects = 0

    def ask(self) -> tuple[bool, int | None]:
        import zmq

        try:
            reply = _call(self.socket, self.command, TIMEOUT)
        except (zmq.ZMQError, ValueError):
            reply = None
        if reply is None:
            self.socket.close()
            self.socket = _socket(self.context, self.endpoint)
            self.reconnects += 1
            return False, None
        return reply[0].get("status") != "error", reply[1]

    def close(self) -> None:
        self.socket.close()


def worker(endpoint: str, command: dict, connections: int, warmup: float, duration: float) -> dict:
    from _common import closedLoop

    return closedLoop(lambda: _Client(endpoint, command), connections, warmup, duration, TIMEOUT + 30)


def _waitActive(endpoint: str, names: int, timeout: float) -> int:
    import zmq

    socket = _socket(zmq.Context.instance(), endpoint)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            reply = _call(socket, {"command": "status", "properties": {}}, 2.0)
            if reply is None:
                socket.close()
                socket = _socket(zmq.Context.instance(), endpoint)
            elif sum(s == "active" for s in reply[0].get("statuses", {}).values()) >= names:
                return 0
            time.sleep(0.05)
        return 1
    finally:
        socket.close()


def main() -> int:
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    if mode == "--wait-active":
        return _waitActive(spec["endpoint"], spec["names"], spec["timeout"])
    result = worker(spec["endpoint"], spec["command"], spec["connections"], spec["warmup"],
                    spec["duration"])
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    # pyzmq's context teardown can wait on sockets of threads that timed out.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
