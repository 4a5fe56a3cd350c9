"""
The admin API's bounds in one place: the fixed ones (what Twisted's HTTP
parser enforces, and ours on top), how hitting any bound is counted, the
one raw HTTP answer written where twisted.web has no request to render
yet, and the JSON nesting check.

Every bound hit is counted in C{orchestrator_admin_rejected_total{reason}}
(see L{REASONS}); the README's C{## Limits} table lists them all with
their configuration keys.
"""

from __future__ import annotations

import re
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.web._render import ApiError, errorBody

__all__ = [
    "ABORT_GRACE",
    "AdminCounters",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "REASONS",
    "jsonTooDeep",
    "rawAnswer",
]

#: The request line plus all headers, in bytes (Twisted's
#: C{HTTPChannel.totalHeadersSize}, and its C{LineReceiver.MAX_LENGTH} for
#: any one line): a longer head is a 431.
MAX_HEADER_BYTES = 16384

#: Header lines in one request.  Twisted allows 500; no API client needs
#: more than a handful.  More is a 431.
MAX_HEADERS = 100

#: Seconds a connection the API has decided to close may take to take its
#: last answer before it is aborted (a client that does not read would
#: otherwise hold it until the kernel gives up).
ABORT_GRACE = 5.0

#: What C{orchestrator_admin_rejected_total} counts, by C{reason}.
REASONS = {
    "connections": "a new connection was refused with 503: admin.max_connections were busy",
    "evicted": "an idle connection was closed to make room for a new one (admin.max_connections)",
    "idle_timeout": "a connection was silent between requests for admin.idle_timeout",
    "header_timeout": "request line and headers not complete within admin.header_timeout (408)",
    "body_timeout": "body not complete within admin.body_timeout (408)",
    "headers_too_large": f"request line and headers over {MAX_HEADER_BYTES} bytes (431)",
    "too_many_headers": f"more than {MAX_HEADERS} header lines (431)",
    "malformed": "a request Twisted's parser refused (400)",
    "body_too_large": "a body over admin.max_body_bytes (413)",
    "json_too_deep": "a JSON body nested deeper than admin.max_json_depth (400)",
    "stream_clients": "an event-stream client refused with 503: admin.max_stream_clients connected",
    "stream_overflow": "an event-stream client fell admin.stream_buffer_bytes behind and was dropped",
    "stream_stalled": "an event-stream client read nothing for admin.stream_stall_timeout and was dropped",
    "stream_lifetime": "an event stream reached admin.stream_max_seconds and was ended",
}


class AdminCounters(Collector):
    """
    The admin API's own metrics: bounds hit, by reason, and the open
    connections and event-stream clients.  Registered on the orchestrator's
    metrics registry by L{orchestrator.web.server.AdminService}.

    @ivar rejected: count by reason (every key of L{REASONS} is exposed,
        zero or not, so a rate can be taken from the start).
    @ivar connections: open connections now.
    @ivar streamClients: event-stream clients now.
    """

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()
        self.connections = 0
        self.streamClients = 0

    def count(self, reason: str) -> None:
        assert reason in REASONS, reason
        self.rejected[reason] += 1

    def describe(self):
        return []  # no collect() at registration time

    def collect(self):
        rejected = CounterMetricFamily(
            "orchestrator_admin_rejected",
            "Requests and connections the admin API refused or cut off at one of its limits, by reason.",
            labels=["reason"])
        for reason in REASONS:
            rejected.add_metric([reason], self.rejected[reason])
        connections = GaugeMetricFamily("orchestrator_admin_connections",
                                        "Open connections to the admin API.")
        connections.add_metric([], self.connections)
        streams = GaugeMetricFamily("orchestrator_admin_stream_clients",
                                    "Clients of GET /api/v1/events/stream and /processes/{name}/logs/stream.")
        streams.add_metric([], self.streamClients)
        return [rejected, connections, streams]


_STATUS_TEXT = {400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
                408: b"Request Timeout", 413: b"Content Too Large", 421: b"Misdirected Request",
                431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


def rawAnswer(error: ApiError) -> bytes:
    """
    A complete HTTP/1.1 response for C{error} that closes the connection:
    for the places that answer before twisted.web has a request to render
    (a refused connection, a head too large or too slow, a refused body).
    """
    body = errorBody(error.message, **error.extra)
    head = [b"HTTP/1.1 %d %s" % (error.status, _STATUS_TEXT.get(error.status, b"Error")),
            b"Content-Type: application/json", b"Cache-Control: no-store",
            b"Connection: close", b"Content-Length: %d" % len(body)]
    head += [f"{name}: {value}".encode("latin-1") for name, value in error.headers.items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


# -- JSON nesting --------------------------------------------------------------------------

#: A JSON string, or an unterminated one up to the end: possessive, so a
#: body of quotes and backslashes is scanned once, never backtracked.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_AS_PARENS = bytes.maketrans(b"[]{}", b"()()")


def jsonTooDeep(raw: bytes, maxDepth: int) -> bool:
    """
    Whether a JSON text could nest arrays and objects deeper than
    C{maxDepth}, decided without parsing it (Python's parser recurses once
    per level: a body of ten thousand C{[} is a C{RecursionError}).

    Strings are cut out, the brackets kept, and innermost pairs removed
    one level per pass (each pass is one C{bytes.replace}, in C), at most
    C{maxDepth} passes.  An unbalanced text is judged by the depth its
    parser could reach before failing, so C{[[[[...} is too deep too.

    @param raw: the body; anything not starting with C{[} or C{{} (after
        blanks) is not JSON nesting and passes.
    """
    start = raw.lstrip(b" \t\r\n")[:1]
    if start not in (b"[", b"{"):
        return False
    brackets = _STRING.sub(b"", raw).translate(_AS_PARENS, _NOT_BRACKETS)
    passes = 0
    while b"()" in brackets:
        if passes == maxDepth:
            return True
        brackets = brackets.replace(b"()", b"")
        passes += 1
    # What is left is ")))(((": the openers left open nest on top of
    # everything removed.
    return passes + brackets.count(b"(") > maxDepth
