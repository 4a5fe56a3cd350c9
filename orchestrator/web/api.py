"""
The admin API resource tree (the seed's contract and per-process routes).
"""

from __future__ import annotations

import json

from twisted.web.resource import Resource

from orchestrator.metrics import MetricsResource

__all__ = ["buildRoot"]


def _json(request, status: int, body) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode() + b"\n"


class _SeedHealth(Resource):
    isLeaf = True

    def __init__(self, orchestrator) -> None:
        super().__init__()
        self._orchestrator = orchestrator

    def render_GET(self, request):
        config = self._orchestrator.config
        name = config.admin.default_process
        process = self._orchestrator.processes.get(name)
        pconfig = config.processes.get(name)
        return _json(request, 200, {
            "orchestrator_enabled": config.enabled,
            "backend_status": process.status if process else "stopped",
            "health_check_interval": pconfig.health.interval if pconfig else None,
            "auto_restart": pconfig.restart.auto if pconfig else False,
            "max_restart_attempts": pconfig.restart.max_attempts if pconfig else 0,
        })


def buildRoot(orchestrator) -> Resource:
    root = Resource()
    api = Resource()
    v1 = Resource()
    admin = Resource()
    backend = Resource()
    root.putChild(b"api", api)
    api.putChild(b"v1", v1)
    v1.putChild(b"admin", admin)
    admin.putChild(b"backend", backend)
    backend.putChild(b"health", _SeedHealth(orchestrator))
    root.putChild(b"metrics", MetricsResource(orchestrator.metrics.registry))
    return root
