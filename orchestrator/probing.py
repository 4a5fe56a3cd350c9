"""
Deprecated location, kept for one release: import L{ProbeResult} from
L{orchestrator.plugin} instead.
"""

from orchestrator.health.results import ProbeResult, describeFailure  # noqa: F401

__all__ = ["ProbeResult", "describeFailure"]
