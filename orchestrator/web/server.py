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
        root = buildRoot(orchestrator, self._admin)
        self.site = AdminSite(root, self._admin, reactor=reactor)
        # The API's own counters (limits hit, connections, stream clients)
        # are scraped with every other metric.
        orchestrator.metrics.registry.register(root.counters)

    def startService(self):
        super().startService()
        listen = self._admin.listen
        endpoint = serverFromString(self._reactor, listen)
        d = endpoint.listen(self.site)

        def listening(port):
            self.port = port
            self.log.info("admin API listening on {listen}", listen=listen)
            return port

        def failed(failure):
            self.log.failure("admin API cannot listen on {listen}", failure, listen=listen)
            # Without its API the orchestrator cannot be driven: stop.
            self._reactor.callLater(0, self._reactor.stop)

        d.addCallbacks(listening, failed)
        self._listening = d

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
