"""
A tiny keep-alive HTTP/1.1 server for the probe-capacity bench: every
request answers 200 C{{"status": "ok"}} at once.  One asyncio loop, no
threads, so hundreds of persistent probe connections cost it little and
the bench measures the prober, not the backend.

It also counts what it answers, for the bench and out of the prober's
reach: C{GET /__window/start} starts a measuring window, C{GET
/__window/stop} ends it and answers JSON: requests answered, seconds, and
how they spread in time (requests per 10 ms slot: mean, p99, max; a prober
that sends all its probes in one burst each second shows a max far above
the mean).

Usage: python _tinybackend.py PORT   (runs until killed)
"""

import asyncio
import json
import sys
import time

BODY = b'{"status": "ok"}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
SLOT = 0.01

_window: dict = {"start": None, "arrivals": []}


def _control(request: bytes) -> bytes | None:
    if not request.startswith(b"GET /__window/"):
        return None
    now = time.monotonic()
    if request.startswith(b"GET /__window/start"):
        _window["start"], _window["arrivals"] = now, []
        body = b"{}"
    else:
        start, arrivals = _window["start"] or now, _window["arrivals"]
        _window["start"], _window["arrivals"] = None, []
        slots = [0] * max(1, int((now - start) / SLOT))
        for t in arrivals:
            i = int((t - start) / SLOT)
            if i < len(slots):
                slots[i] += 1
        ordered = sorted(slots)
        body = json.dumps({"requests": len(arrivals), "seconds": now - start,
                           "slot_s": SLOT, "per_slot_mean": len(arrivals) / len(slots),
                           "per_slot_p99": ordered[int(0.99 * (len(ordered) - 1))],
                           "per_slot_max": ordered[-1],
                           "empty_slots": ordered.count(0) / len(slots)}).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class _Health(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        # Requests carry no body (GET/HEAD): one answer per blank line.
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            request, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            control = _control(request)
            if control is not None:
                self.transport.write(control)
                continue
            if _window["start"] is not None:
                _window["arrivals"].append(time.monotonic())
            self.transport.write(RESPONSE)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Health, "127.0.0.1", port, backlog=1024,
                                      reuse_address=True)
    print(f"tiny backend listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
