"""
HTTP probes in memory: a real L{twisted.web.server.Site} (or any server
protocol) connected to the probe's client protocol over L{iosim} transports,
no sockets.  The probe's counterpart of treq's C{StubTreq}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.test import iosim
from twisted.web.server import Site

__all__ = ["MemoryHTTP"]


class MemoryHTTP:
    """
    Serves C{resource} (or protocols from C{serverFactory}) to an HTTP
    probe built with C{connect=memory.connect}; bytes move on C{flush()}.

    @ivar connections: every (origin, server protocol, client transport)
        opened, in order.
    @ivar refuse: when true, connections are refused.
    """

    def __init__(self, resource=None, serverFactory=None) -> None:
        self.factory = serverFactory or Site(resource, reactor=Clock())
        self.connections: list[tuple] = []
        self.pumps: list[iosim.IOPump] = []
        self.refuse = False

    def connect(self, origin, protocol) -> Deferred:
        if self.refuse:
            return fail(ConnectionRefusedError())
        server = self.factory.buildProtocol(None)
        serverTransport = iosim.FakeTransport(server, isServer=True)
        clientTransport = iosim.FakeTransport(protocol, isServer=False)
        self.pumps.append(iosim.connect(server, serverTransport, protocol, clientTransport,
                                        greet=False))
        self.connections.append((origin, server, clientTransport))
        return succeed(protocol)

    def flush(self) -> None:
        """
        Move every pending byte (and close) both ways until quiet.
        """
        for _ in range(100):
            if not any([pump.pump() for pump in self.pumps]):
                return

    @property
    def open(self) -> int:
        """
        Connections whose client side has not been lost yet.
        """
        return sum(1 for _, _, transport in self.connections if not transport.disconnected)
