"""
A tiny keep-alive HTTP/1.1 server for the probe-capacity bench: every
request answers 200 C{{"status": "ok"}} at once.  One asyncio loop, no
threads, so hundreds of persistent probe connections cost it little and
the bench measures the prober, not the backend.

Usage: python _tinybackend.py PORT   (runs until killed)
"""

import asyncio
import sys

BODY = b'{"status": "ok"}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


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
            self.buffer = self.buffer[end + 4:]
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
