"""
Probe results, and turning a failed check into a short human reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import error as _error
from twisted.internet.defer import CancelledError, TimeoutError as _DeferredTimeout

__all__ = ["ProbeResult", "describeFailure"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """
    The outcome of one health check.

    Probe kinds fill C{healthy}, C{reason} and C{detail}; the scheduler
    stamps C{latency} and C{timestamp}.

    @ivar healthy: whether the check passed.
    @ivar reason: a short explanation (C{"HTTP 200"}, C{"Connection refused"},
        C{"timeout after 5.0s"}, C{"exit 2: <stderr tail>"}).
    @ivar detail: optional longer text (a body excerpt, captured output).
    @ivar latency: seconds the check took.
    @ivar timestamp: when it finished (reactor seconds).
    @ivar limit: the bound this check's input hit, if any (C{"header_bytes"},
        C{"headers"}, C{"body_bytes"}): counted per process in the metrics.
        Slots and no per-result dict: one of these is made per probe.
    """

    healthy: bool
    reason: str = ""
    detail: str = ""
    latency: float = 0.0
    timestamp: float = 0.0
    limit: str | None = None

    def toJSON(self) -> dict:
        return {
            "healthy": self.healthy,
            "reason": self.reason,
            "detail": self.detail,
            "latency_secs": round(self.latency, 6),
            "timestamp": self.timestamp,
        }


def describeFailure(failure, timeout: float) -> str:
    """
    A short reason for a check that failed with an exception.
    """
    e = failure.value
    if isinstance(e, (_DeferredTimeout, CancelledError, _error.TimeoutError)):
        return f"timeout after {float(timeout)}s"  # "timeout after 5.0s"
    if isinstance(e, _error.ConnectionRefusedError):
        return "Connection refused"
    if isinstance(e, _error.DNSLookupError):
        return "DNS lookup failed"
    if isinstance(e, (_error.ConnectionLost, _error.ConnectionDone)):
        return "Connection closed before an answer"
    text = str(e).strip() or type(e).__name__
    # treq/twisted.web wrap the real cause in a list of failures.
    reasons = getattr(e, "reasons", None)
    if reasons:
        inner = reasons[0]
        if hasattr(inner, "value"):
            return describeFailure(inner, timeout)
    return text.splitlines()[0][:200]
