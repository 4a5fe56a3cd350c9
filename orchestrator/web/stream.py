"""
C{GET /api/v1/events/stream}: the event bus as Server-Sent Events.

Each event is written as it is emitted::

    id: 42
    event: crashed
    data: {"id": "evt_...", "type": "crashed", "process": "backend", ...}

A client that reconnects with C{Last-Event-ID} (or C{?since=SEQ}) first
gets the recent events it missed.  A comment line every
C{keepAlive} seconds keeps proxies from closing an idle stream.  The
subscription and the timer end when the client goes away.
"""

from __future__ import annotations

import json

from twisted.internet.task import LoopingCall
from twisted.web.server import NOT_DONE_YET

from orchestrator.web._params import queryInt, queryText
from orchestrator.web._render import ApiError, ApiResource, renderDeferred

__all__ = ["EventStream", "formatEvent"]


def formatEvent(event) -> bytes:
    """
    One event as an SSE message.
    """
    data = json.dumps(event.toJSON(), separators=(", ", ": "))
    return f"id: {event.sequence}\nevent: {event.type}\ndata: {data}\n\n".encode("utf-8")


class EventStream(ApiResource):
    """
    @param bus: the L{orchestrator.notify.events.EventBus}.
    @param clock: for the keep-alive comments.
    @param keepAlive: seconds between them.
    """

    def __init__(self, bus, clock, keepAlive: float = 15.0) -> None:
        super().__init__()
        self._bus = bus
        self._clock = clock
        self._keepAlive = keepAlive

    def allowedMethods(self) -> list[str]:
        return ["GET"]

    def render(self, request):
        if request.method != b"GET":
            return super().render(request)
        try:
            since = self._since(request)
            process = queryText(request, "process")
        except ApiError as e:
            from twisted.internet.defer import fail

            return renderDeferred(request, fail(e))
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")  # nginx: do not buffer
        request.write(b"retry: 2000\n\n")

        def send(event):
            if process is None or event.process == process:
                request.write(formatEvent(event))

        if since is not None:
            for event in list(self._bus.recent):
                if event.sequence > since:
                    send(event)
        unsubscribe = self._bus.subscribe(send)
        ping = LoopingCall(request.write, b": keep-alive\n\n")
        ping.clock = self._clock
        ping.start(self._keepAlive, now=False)

        def gone(_):
            unsubscribe()
            if ping.running:
                ping.stop()

        request.notifyFinish().addBoth(gone)
        return NOT_DONE_YET

    def _since(self, request) -> int | None:
        since = queryInt(request, "since", None)
        if since is None:
            header = request.getHeader(b"last-event-id")
            if header is not None:
                try:
                    since = int(header)
                except ValueError:
                    raise ApiError(400, "Last-Event-ID must be an event sequence number, "
                                        f"not {header.decode('latin-1')!r}")
        return since
