"""
Server-Sent Events: C{GET /api/v1/events/stream}, the event bus, and
C{GET /api/v1/processes/{name}/logs/stream}, a process's new output
lines.  Both are an L{SSEStream}, sharing one set of clients (so
C{admin.max_stream_clients} bounds them together) and every limit below.

Each event is written as it is emitted::

    id: 42
    event: crashed
    data: {"id": "evt_...", "type": "crashed", "process": "backend", ...}

A client that reconnects with C{Last-Event-ID} (or C{?since=SEQ}) first
gets the recent events it missed.  A comment line every
C{admin.stream_keepalive} seconds keeps proxies from closing an idle
stream.

Every client is bounded, because a supervisor in a crash storm emits
events faster than a stuck reader takes them:

 - each client is a push producer on its connection: when the
   connection's write buffer is full (Twisted pauses it), events wait in
   the client's own queue, at most C{admin.stream_buffer_bytes}; past that
   the client is sent a final C{event: overflow} and disconnected (it can
   reconnect with C{Last-Event-ID}); the kernel's send buffer of the
   socket is set to L{SEND_BUFFER_BYTES} so that it does not hide
   megabytes more;
 - a client paused for C{admin.stream_stall_timeout} seconds in a row is
   aborted; a stream ends after C{admin.stream_max_seconds} (an
   C{EventSource} reconnects by itself);
 - at most C{admin.max_stream_clients} clients at once: the next one is a
   503.

Each of these is counted (L{orchestrator.web.limits.REASONS}).  The
subscription, the timers and the queue go as soon as the client does.
"""

from __future__ import annotations

import json
import socket
from collections import deque
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import fail
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from orchestrator.web._params import queryInt, queryText
from orchestrator.web._render import ApiError, ApiResource, renderDeferred
from orchestrator.web.limits import AdminCounters

__all__ = ["EventStream", "LogStream", "SSEStream", "SEND_BUFFER_BYTES", "formatEvent", "formatLine"]

_log = Logger()

#: The socket send buffer of a stream connection (C{SO_SNDBUF}; Linux
#: doubles it).  Without it the kernel grows the buffer to megabytes
#: per client that does not read, memory no queue bound sees.
SEND_BUFFER_BYTES = 65536

_KEEPALIVE = b": keep-alive\n\n"


def formatEvent(event) -> bytes:
    """
    One event as an SSE message.
    """
    data = json.dumps(event.toJSON(), separators=(", ", ": "))
    return f"id: {event.sequence}\nevent: {event.type}\ndata: {data}\n\n".encode("utf-8")


def formatLine(line) -> bytes:
    """
    One output line as an SSE message (C{event: line}).
    """
    data = json.dumps(line.toJSON(), separators=(", ", ": "))
    return f"id: {line.sequence}\nevent: line\ndata: {data}\n\n".encode("utf-8")


def _message(kind: str, body: dict) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(body, separators=(', ', ': '))}\n\n".encode("utf-8")


@dataclass(frozen=True)
class _Feed:
    """
    What one client of a stream gets: C{replay}, the messages it missed,
    then whatever C{subscribe(send)} sends (C{send(None)}: the source is
    gone, end the stream); C{subscribe} returns the unsubscriber.
    """

    replay: list
    subscribe: Callable[[Callable[[bytes | None], None]], Callable[[], None]]


class SSEStream(ApiResource):
    """
    A Server-Sent Events route with the bounds the module describes.
    Subclasses say what a request follows (L{_feed}).

    @param clock: for the keep-alive comments and the stream's timers.
    @param admin: the C{admin} settings (C{max_stream_clients},
        C{stream_*}).
    @param counters: where the limits count their hits.
    @param clients: the set of connected clients, shared with the other
        streams.

    @ivar clients: the connected L{_StreamClient}s (of every stream).
    """

    def __init__(self, clock, admin, counters: AdminCounters | None = None,
                 clients: set | None = None) -> None:
        super().__init__()
        self._clock = clock
        self._admin = admin
        self._counters = counters if counters is not None else AdminCounters()
        self.clients: set[_StreamClient] = clients if clients is not None else set()

    def allowedMethods(self) -> list[str]:
        return ["GET"]

    def render(self, request):
        if request.method != b"GET":
            return super().render(request)
        try:
            since = self._since(request)
            feed = self._feed(request, since)
            self._checkRoom()
        except ApiError as e:
            return renderDeferred(request, fail(e))
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: do not buffer
        client = _StreamClient(self, request)
        self.clients.add(client)
        self._counters.streamClients = len(self.clients)
        client.start(feed)
        return NOT_DONE_YET

    def _feed(self, request, since: int | None) -> _Feed:
        """
        @raise ApiError: the request is refused (a bad parameter, an
            unknown process).
        """
        raise NotImplementedError

    def _checkRoom(self) -> None:
        limit = self._admin.max_stream_clients
        if len(self.clients) >= limit:
            self._counters.count("stream_clients")
            raise ApiError(503, f"too many stream clients (event and log streams together, "
                                f"admin.max_stream_clients: {limit}); "
                                "try again later", headers={"Retry-After": "5"})

    def _gone(self, client: "_StreamClient") -> None:
        self.clients.discard(client)
        self._counters.streamClients = len(self.clients)

    def _since(self, request) -> int | None:
        since = queryInt(request, "since", None)
        if since is None:
            header = request.getHeader(b"last-event-id")
            if header is not None:
                try:
                    since = int(header)
                except ValueError:
                    since = -1
                if since < 0:
                    raise ApiError(400, "Last-Event-ID must be a sequence number (an integer >= 0), "
                                        f"not {header.decode('latin-1')!r}")
        return since


class EventStream(SSEStream):
    """
    C{GET /api/v1/events/stream[?since=SEQ&process=NAME]}.

    @param bus: the L{orchestrator.notify.events.EventBus}.
    """

    def __init__(self, bus, clock, admin, counters: AdminCounters | None = None,
                 clients: set | None = None) -> None:
        super().__init__(clock, admin, counters, clients)
        self._bus = bus

    def _feed(self, request, since: int | None) -> _Feed:
        process = queryText(request, "process")
        wanted = lambda event: process is None or event.process == process  # noqa: E731
        replay = ([formatEvent(e) for e in self._bus.recent if e.sequence > since and wanted(e)]
                  if since is not None else [])

        def subscribe(send):
            return self._bus.subscribe(lambda event: send(formatEvent(event)) if wanted(event) else None)

        return _Feed(replay, subscribe)


class LogStream(SSEStream):
    """
    C{GET /api/v1/processes/{name}/logs/stream}: the lines a process
    writes from now on (after the ones in its ring newer than
    C{Last-Event-ID} or C{?since=}), as C{event: line} messages whose id
    is the line's sequence number.  The stream ends (with a comment to
    reconnect) when a reload removes or replaces the process.

    @param lookup: C{lookup()} -> the process, or raises the 404.
    """

    def __init__(self, lookup: Callable, clock, admin, counters: AdminCounters | None = None,
                 clients: set | None = None) -> None:
        super().__init__(clock, admin, counters, clients)
        self._lookup = lookup

    def _feed(self, request, since: int | None) -> _Feed:
        output = self._lookup().output
        replay = ([formatLine(line) for line in output.lines if line.sequence > since]
                  if since is not None else [])

        def subscribe(send):
            return output.subscribe(lambda line: send(formatLine(line) if line is not None else None))

        return _Feed(replay, subscribe)


@implementer(IPushProducer)
class _StreamClient:
    """
    One client of the event stream, and the producer of its connection:
    Twisted pauses it when the connection's write buffer is full and
    resumes it when the buffer has drained.

    @ivar queued: bytes waiting in the queue.
    """

    def __init__(self, stream: SSEStream, request) -> None:
        self._stream = stream
        self._request = request
        self._admin = stream._admin
        self._clock = stream._clock
        self._counters = stream._counters
        self._queue: deque[bytes] = deque()
        self.queued = 0
        self._paused = False
        self._done = False
        self._unsubscribe = None
        self._ping = None
        self._stall = None
        self._lifetime = None

    def start(self, feed: _Feed) -> None:
        request = self._request
        request.registerProducer(self, True)
        _limitSendBuffer(request)
        request.notifyFinish().addBoth(self._finished)
        self._write(b"retry: 2000\n\n")
        for message in feed.replay:
            self._send(message)
        self._unsubscribe = feed.subscribe(self._fromSource)
        self._ping = LoopingCall(self._keepAlive)
        self._ping.clock = self._clock
        self._ping.start(self._admin.stream_keepalive, now=False)
        self._lifetime = self._clock.callLater(self._admin.stream_max_seconds, self._expire)

    # -- writing ----------------------------------------------------------------------------

    def _fromSource(self, message: bytes | None) -> None:
        if message is None:
            self._close(b": the source of this stream is gone; reconnect\n\n", abort=False,
                        keepConnection=True)
        else:
            self._send(message)

    def _keepAlive(self) -> None:
        if not self._paused:  # a paused client has events waiting anyway
            self._send(_KEEPALIVE)

    def _send(self, data: bytes) -> None:
        if self._done:
            return
        if not self._paused and not self._queue:
            self._write(data)
            return
        limit = self._admin.stream_buffer_bytes
        if self.queued + len(data) > limit:
            self._overflow(limit)
            return
        self._queue.append(data)
        self.queued += len(data)

    def _write(self, data: bytes) -> None:
        self._request.write(data)

    # -- IPushProducer ------------------------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        if self._stall is None and not self._done:
            self._stall = self._clock.callLater(self._admin.stream_stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancel("_stall")
        while self._queue and not self._paused and not self._done:
            data = self._queue.popleft()
            self.queued -= len(data)
            self._write(data)

    def stopProducing(self) -> None:
        self._end()

    # -- the end --------------------------------------------------------------------------------

    def _overflow(self, limit: int) -> None:
        self._counters.count("stream_overflow")
        _log.warn("admin API: an event stream client fell more than admin.stream_buffer_bytes "
                  "({limit} bytes) behind; disconnected", limit=limit)
        final = _message("overflow", {
            "success": False,
            "error": f"this client fell more than admin.stream_buffer_bytes ({limit} bytes) of events "
                     "behind and is disconnected; reconnect with Last-Event-ID to resume"})
        self._close(final, abort=False)

    def _stalled(self) -> None:
        self._stall = None
        self._counters.count("stream_stalled")
        _log.warn("admin API: an event stream client read nothing for admin.stream_stall_timeout "
                  "({seconds} s); disconnected", seconds=self._admin.stream_stall_timeout)
        self._close(None, abort=True)

    def _expire(self) -> None:
        self._lifetime = None
        self._counters.count("stream_lifetime")
        self._close(b": this stream ends after admin.stream_max_seconds; reconnect\n\n", abort=False,
                    keepConnection=True)

    def _close(self, final: bytes | None, abort: bool, keepConnection: bool = False) -> None:
        """
        End the stream: write C{final} (past the queue, which is dropped),
        finish the response, and close the connection (after a grace for
        the client to take C{final}, or at once with C{abort}).
        """
        if self._done:
            return
        request = self._request
        channel = request.channel
        self._end()
        if channel is None:
            return  # already gone
        if abort:
            channel.transport.abortConnection()
            return
        if final:
            request.write(final)
        request.unregisterProducer()
        request.finish()
        if not keepConnection:
            closeSoon = getattr(channel, "closeSoon", None)
            (closeSoon or channel.transport.loseConnection)()

    def _finished(self, _) -> None:
        self._end()

    def _end(self) -> None:
        if self._done:
            return
        self._done = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._ping is not None and self._ping.running:
            self._ping.stop()
        self._cancel("_stall")
        self._cancel("_lifetime")
        self._queue.clear()
        self.queued = 0
        self._stream._gone(self)

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        setattr(self, name, None)
        if call is not None and call.active():
            call.cancel()


def _limitSendBuffer(request) -> None:
    """
    Cap the kernel's send buffer of the request's socket (see
    L{SEND_BUFFER_BYTES}); nothing to do for a transport without one.
    """
    try:
        handle = request.channel.transport.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
    except (AttributeError, OSError, TypeError):
        pass
