"""
The admin API's listener, as a service.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.server import Site

from orchestrator.web.api import buildRoot

__all__ = ["AdminService", "buildRoot"]


class AdminService(Service):
    """
    Listen on C{admin.listen} and serve the API; stops listening first at
    shutdown (it is the last child of the orchestrator service).

    @ivar port: the listening port once started (tests read the real
        port number from it).
    """

    name = "admin"
    log = Logger()

    def __init__(self, orchestrator, reactor) -> None:
        self._orchestrator = orchestrator
        self._reactor = reactor
        self.port = None
        self.site = None

    def startService(self):
        super().startService()
        config = self._orchestrator.config.admin
        self.site = Site(buildRoot(self._orchestrator))
        self.site.displayTracebacks = False
        self.site.noisy = False
        endpoint = serverFromString(self._reactor, config.listen)
        d = endpoint.listen(self.site)

        def listening(port):
            self.port = port
            self.log.info("admin API listening on {listen}", listen=config.listen)
            return port

        def failed(failure):
            self.log.failure("admin API cannot listen on {listen}", failure, listen=config.listen)
            # Without its API the orchestrator cannot be driven: stop.
            self._reactor.callLater(0, self._reactor.stop)

        d.addCallbacks(listening, failed)
        self._listening = d

    def stopService(self):
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
