"""
An HTTP client for webhooks that reads at most a bounded number of bytes
from the receiver and can abort its connection at any moment.

Twisted's client parser buffers a response's status line and headers
without a limit on their count, and treq's body collection has no
canceller: a receiver answering with endless headers, a 1 GiB body or a
body dripping one byte a second would cost the orchestrator memory or a
descriptor for as long as it likes.  Everything here is public API: an
L{Agent} built with L{Agent.usingEndpointFactory} whose endpoints wrap
the real ones (L{HostnameEndpoint}, with TLS for C{https}) in a
L{WrappingFactory} that counts every byte received on the connection
(status line, headers, body alike) and aborts it past the limit.  The
connections are tracked so that the caller aborts whatever is still open
when an attempt ends, times out or is cancelled.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

__all__ = ["BoundedConnections", "boundedAgent", "BytesProducer", "discardBody"]


class BoundedConnections:
    """
    The open connections of one client, and how many were cut for
    answering more than C{limit} bytes.

    @ivar limit: bytes a connection may receive before it is aborted.
    @ivar overflows: connections aborted at the limit, ever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.overflows = 0
        self._open: set[_CountingProtocol] = set()

    def __len__(self) -> int:
        return len(self._open)

    def abortAll(self) -> int:
        """
        Abort every connection still open (an attempt is over: nothing of
        it may keep a descriptor).

        @return: how many were open.
        """
        open_, self._open = list(self._open), set()
        for connection in open_:
            connection.transport.abortConnection()
        return len(open_)


class _CountingProtocol(ProtocolWrapper):
    def __init__(self, factory, wrappedProtocol) -> None:
        super().__init__(factory, wrappedProtocol)
        self._received = 0

    def makeConnection(self, transport) -> None:
        self.factory.connections._open.add(self)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self._received += len(data)
        connections = self.factory.connections
        if self._received > connections.limit:
            connections.overflows += 1
            connections._open.discard(self)
            self.transport.abortConnection()
            return
        super().dataReceived(data)

    def connectionLost(self, reason) -> None:
        self.factory.connections._open.discard(self)
        super().connectionLost(reason)


class _CountingFactory(WrappingFactory):
    protocol = _CountingProtocol
    noisy = False

    def __init__(self, wrappedFactory, connections: BoundedConnections) -> None:
        # Agent's connection factory logs "Starting factory" for every
        # connection otherwise; Factory.noisy is its public switch.
        wrappedFactory.noisy = False
        super().__init__(wrappedFactory)
        self.connections = connections


@implementer(IStreamClientEndpoint)
class _CountingEndpoint:
    def __init__(self, endpoint, connections: BoundedConnections) -> None:
        self._endpoint = endpoint
        self._connections = connections

    def connect(self, protocolFactory):
        # The agent talks to the protocol its factory built, not to the
        # wrapper around it.
        d = self._endpoint.connect(_CountingFactory(protocolFactory, self._connections))
        return d.addCallback(lambda wrapper: wrapper.wrappedProtocol)


def _defaultEndpoint(reactor, timeout: float):
    tls = BrowserLikePolicyForHTTPS()

    def endpointFor(uri):
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        endpoint = HostnameEndpoint(reactor, uri.host, uri.port, timeout=timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(tls.creatorForNetloc(uri.host, uri.port), endpoint)
        return endpoint

    return endpointFor


@implementer(IAgentEndpointFactory)
class _EndpointFactory:
    def __init__(self, endpointFor, connections: BoundedConnections) -> None:
        self._endpointFor = endpointFor
        self._connections = connections

    def endpointForURI(self, uri):
        return _CountingEndpoint(self._endpointFor(uri), self._connections)


def boundedAgent(reactor, connections: BoundedConnections, connectTimeout: float,
                 endpointFor: Callable | None = None) -> Agent:
    """
    An L{Agent} whose every connection is counted and bounded by
    C{connections}.  Connections are not kept alive (the default pool of
    L{Agent.usingEndpointFactory}): an attempt's connection ends with it.

    @param endpointFor: C{endpointFor(uri)} -> the endpoint to reach
        C{uri} (tests connect in memory); default TCP, with TLS for https.
    """
    endpointFor = endpointFor or _defaultEndpoint(reactor, connectTimeout)
    return Agent.usingEndpointFactory(reactor, _EndpointFactory(endpointFor, connections))


@implementer(IBodyProducer)
class BytesProducer:
    """
    A request body already in memory, written at once (Twisted's
    C{FileBodyProducer} would schedule its writes on the global reactor's
    cooperator).
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Discard(Protocol):
    def __init__(self, done: Deferred) -> None:
        self._done = done

    def dataReceived(self, data: bytes) -> None:
        pass  # the connection's byte limit bounds how much arrives

    def connectionLost(self, reason) -> None:
        if not self._done.called:
            self._done.callback(None)


def discardBody(response) -> Deferred:
    """
    Read C{response}'s body to its end and throw it away; the Deferred
    fires when it ends, however it ends (the status code already said
    what the receiver did with the event).  Cancelling it stops the body
    at once.
    """
    protocol: list[_Discard] = []

    def cancel(d):
        if protocol and protocol[0].transport is not None:
            protocol[0].transport.stopProducing()

    done: Deferred = Deferred(cancel)
    protocol.append(_Discard(done))
    response.deliverBody(protocol[0])
    return done
