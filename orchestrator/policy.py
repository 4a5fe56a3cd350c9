"""
Deprecated location, kept for one release: import L{RestartHistory} and
L{ExitRecord} from L{orchestrator.plugin} instead.
"""

from orchestrator.supervision.policy import ExitRecord, RestartHistory  # noqa: F401

__all__ = ["ExitRecord", "RestartHistory"]
