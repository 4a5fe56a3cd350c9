"""
The admin API's listener, as a service.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from orchestrator.web.api import buildRoot
from orchestrator.web.security import AdminSite

__all__ = ["AdminService", "buildRoot"]


class AdminService(Service):
    """
    Listen on C{admin.listen} and serve the API; stops listening first at
    shutdown (it is the last child of the orchestrator service).

    The resource tree is built here, while the orchestrator is built, so
    that plugin resources that clash fail C{twistd} before it starts
    anything.

    @ivar site: the L{AdminSite}.
    @ivar port: the listening port once started (tests read the real
        port number from it).
    """

    name = "admin"
    log = Logger()

    def __init__(self, orchestrator, reactor) -> None:
        self._orchestrator = orchestrator
        self._reactor = reactor
        self._admin = orchestrator.config.admin
        self.port = None
        self._listening = None
        root = buildRoot(orchestrator, self._admin)
        self.site = AdminSite(root, self._admin, reactor=reactor)
        # The API's own counters (limits hit, connections, stream clients)
        # are scraped with every other metric.
        orchestrator.metrics.registry.register(root.counters)

    def listen(self):
        """
        Bind C{admin.listen} now, once (the orchestrator binds it before
        it spawns anything, so a port already taken fails the start with no
        child spawned; L{startService} then does not bind again).

        @return: a Deferred firing with the listening port, or failing with
            the endpoint's error (e.g. L{twisted.internet.error.CannotListenError}).
        """
        listen = self._admin.listen
        d = serverFromString(self._reactor, listen).listen(self.site)

        def listening(port):
            self.port = port
            self.log.info("admin API listening on {listen}", listen=listen)
            return port

        self._listening = d.addCallback(listening)
        return d

    def startService(self):
        super().startService()
        if self._listening is None:
            self.listen().addErrback(self._failed)

    def _failed(self, failure):
        # Started on its own (the orchestrator reports a failed bind itself):
        # without its API the orchestrator cannot be driven.
        self.log.error("admin API cannot listen on {listen}: {why}",
                       listen=self._admin.listen, why=failure.getErrorMessage())
        self._reactor.callLater(0, self._reactor.stop)

    def stopService(self):
        super().stopService()
        self._listening = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
