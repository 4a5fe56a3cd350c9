"""
The twistd plugin: C{twistd orchestrator}.  Only a service maker lives
here; everything else is imported lazily from L{orchestrator.tap}.
"""

from twisted.application.service import ServiceMaker

orchestrator = ServiceMaker(
    "orchestrator",
    "orchestrator.tap",
    "Process supervisor: health probes, restart policies, REST admin API, Prometheus metrics.",
    "orchestrator",
)
