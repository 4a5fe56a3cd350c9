"""
Schedule one process's health probes and turn their results into status
changes.

While a process is C{starting}, probes go out quickly (the first about
10 ms after the spawn, the gap doubling up to C{start_interval}), so a
backend ready in 80 ms is reported C{running} within about 200 ms rather
than an interval later.  Once it is running, probes follow C{interval} on a
fixed phase (like L{twisted.internet.task.LoopingCall}): a late reactor does
not stretch the period, and a probe never overlaps itself; slots missed
while one was slow are skipped.  Processes that start together would probe
in the same instant for ever after, so each draws a random phase over the
interval from the injected random source: a monitor-only process for its
first probe, a managed one when it becomes ready (its fast start polling
is kept).  The core enforces C{timeout} on every probe kind by cancelling
its Deferred, and a shared L{ProbeGate} caps the probes in flight at once.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger

from orchestrator.health.results import ProbeResult, describeFailure

__all__ = ["DEFAULT_MAX_CONCURRENT_PROBES", "HealthMonitor", "HealthSnapshot", "ProbeGate"]

_FIRST_START_GAP = 0.01

#: Probes in flight at once, all processes together, unless configured
#: (C{orchestrator.max_concurrent_probes}).
DEFAULT_MAX_CONCURRENT_PROBES = 256


class ProbeGate:
    """
    At most C{limit} probes in flight at once, all processes together.

    A probe due while the gate is full waits (first come, first served)
    until one finishes; its timeout starts when it really goes out.  Each
    process has at most one probe due, so the queue is bounded by the
    number of processes.  Why: a thousand hanging backends, or exec probes
    of processes started together, must not make the orchestrator hold a
    thousand connections or children at once.

    @ivar deferred: probes that had to wait, since start (a metric).
    """

    log = Logger()

    def __init__(self, limit: int = DEFAULT_MAX_CONCURRENT_PROBES) -> None:
        self.limit = limit
        self.inFlight = 0
        self.deferred = 0
        self._queue: OrderedDict[object, Callable[[], None]] = OrderedDict()
        self._draining = False

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def acquire(self, key: object, start: Callable[[], None]) -> bool:
        """
        Take a slot (C{True}: go now), or queue C{start} under C{key} to be
        called when one frees (C{False}).
        """
        if self.inFlight < self.limit:
            self.inFlight += 1
            return True
        self.deferred += 1
        if self.deferred == 1 or self.deferred % 1000 == 0:
            self.log.warn("{n} probe(s) had to wait: {limit} in flight at once "
                          "(orchestrator.max_concurrent_probes)", n=self.deferred, limit=self.limit)
        self._queue[key] = start
        return False

    def setLimit(self, limit: int) -> None:
        """
        A reload changed the cap: a higher one starts waiting probes now.
        """
        self.limit = limit
        self.inFlight += 1
        self.release()

    def discard(self, key: object) -> None:
        """
        C{key} no longer wants its queued slot.
        """
        self._queue.pop(key, None)

    def release(self) -> None:
        """
        A probe finished: start waiting ones while there is room.  A loop,
        not recursion: a probe that answers at once releases inside
        C{start()}.
        """
        self.inFlight -= 1
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue and self.inFlight < self.limit:
                _, start = self._queue.popitem(last=False)
                self.inFlight += 1
                start()
        finally:
            self._draining = False


@dataclass(frozen=True)
class HealthSnapshot:
    """
    What the API and metrics show of a process's health.
    """

    probe: str
    last_health_check: str  # healthy / unhealthy / unknown
    last: ProbeResult | None
    total: int
    successes: int
    failures: int
    consecutive_failures: int
    consecutive_successes: int
    results: tuple[ProbeResult, ...]

    @property
    def success_rate(self) -> float:
        """
        Successes over all checks since the orchestrator started (1.0 before any).
        """
        return self.successes / self.total if self.total else 1.0

    @property
    def window_success_rate(self) -> float:
        """
        Successes over the last C{health.history} checks.
        """
        if not self.results:
            return 1.0
        return sum(1 for r in self.results if r.healthy) / len(self.results)


class HealthMonitor:
    """
    Probes one process for as long as its current run lasts, keeping
    statistics across runs.

    @param process: the L{orchestrator.supervision.process.ManagedProcess}; told
        C{healthReady()}, C{healthFailed(reason)}, C{startTimedOut(reason)}
        or, in monitor-only mode, C{monitorStatus(status, reason)}.
    @param config: its L{orchestrator.config.types.HealthConfig}.
    @param probe: an object whose C{check()} returns a Deferred
        L{ProbeResult}.
    @param clock: C{seconds()} and C{callLater()}.
    @param onResult: called with every stamped result (metrics).
    @param random: a zero-argument callable returning a float in [0, 1):
        the phase of the schedule (see the module docstring).
    @param gate: the shared L{ProbeGate}, or C{None} for no cap.
    @param limitHits: where to count results that hit a bound, by bound
        (C{ProbeResult.limit}); the supervisor passes its per-name counters
        so the counts outlive a reload that replaces the process.
    @ivar limitHits: per bound, how many results hit it.
    """

    log = Logger()

    def __init__(self, process, config, probe, clock, managed: bool = True, onResult=None,
                 random=None, gate: ProbeGate | None = None,
                 limitHits: dict[str, int] | None = None) -> None:
        self._process = process
        self._config = config
        self._probe = probe
        self._clock = clock
        self._managed = managed
        self._onResult = onResult or (lambda name, result: None)
        self._random = random or (lambda: 0.0)
        self._gate = gate
        self._holding = False
        self._phase = 0.0
        self.limitHits: dict[str, int] = {} if limitHits is None else limitHits
        self._due = 0.0
        self.results: deque[ProbeResult] = deque(maxlen=config.history)
        self.total = self.successes = self.failures = 0
        self.consecutiveFailures = self.consecutiveSuccesses = 0
        self._call = None
        self._inFlight = None
        self._deadline = None
        self._timeoutCall = None
        self.lastStartFailure: ProbeResult | None = None
        self._running = False
        self._starting = False
        self._gap = _FIRST_START_GAP
        self._spawnedAt = 0.0
        self._label = process.name[:1].upper() + process.name[1:]

    @property
    def probing(self) -> bool:
        return self._running

    def snapshot(self) -> HealthSnapshot:
        last = self.results[-1] if self.results else None
        verdict = "unknown" if last is None else ("healthy" if last.healthy else "unhealthy")
        return HealthSnapshot(
            probe=self._config.probe,
            last_health_check=verdict,
            last=last,
            total=self.total,
            successes=self.successes,
            failures=self.failures,
            consecutive_failures=self.consecutiveFailures,
            consecutive_successes=self.consecutiveSuccesses,
            results=tuple(self.results),
        )

    def start(self) -> None:
        """
        A new run began: probe quickly until it is ready.
        """
        self.stop()
        self._running = True
        self._starting = True
        self._gap = _FIRST_START_GAP
        self._spawnedAt = self._clock.seconds()
        self.consecutiveFailures = self.consecutiveSuccesses = 0
        self.lastStartFailure = None
        first = _FIRST_START_GAP
        # Where in the interval this run's steady probes fall: the first
        # one comes (1 - phase) * interval after the ready check, so
        # processes that start together do not probe in step.
        self._phase = self._random() if self._managed else 0.0
        if not self._managed:
            # Monitor-only processes all begin together: spread their
            # phases over the first interval so probes do not queue behind
            # each other for ever after.
            first += self._random() * min(self._config.interval, self._config.start_interval)
        self._schedule(first)
        if self._managed and self._config.start_timeout > 0:
            self._timeoutCall = self._clock.callLater(self._config.start_timeout, self._startTimeout)

    def resume(self) -> None:
        """
        Begin probing a child that is already ready (a reload gave a
        running process a probe): the steady schedule, no start timeout.
        """
        self.stop()
        self._running = True
        self._starting = False
        self._spawnedAt = self._clock.seconds() - self._config.start_period
        self._schedule(_FIRST_START_GAP)

    def stop(self) -> None:
        """
        The run ended: no more probes; an in-flight probe is cancelled.
        """
        self._running = False
        for attr in ("_call", "_timeoutCall"):
            call = getattr(self, attr)
            if call is not None and call.active():
                call.cancel()
            setattr(self, attr, None)
        if self._gate is not None:
            self._gate.discard(self)
        self._abandonCheck()

    def _abandonCheck(self) -> None:
        """
        Cancel the probe in flight (its answer is no longer wanted) and
        give its slot back.
        """
        inFlight, self._inFlight = self._inFlight, None
        self._cancelDeadline()
        if inFlight is not None:
            inFlight.cancel()
        self._release()

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self._gate.release()

    def close(self) -> Deferred:
        """
        The process is gone for good (shutdown, reload): stop probing and
        let the probe release what it holds (an HTTP connection pool).
        """
        self.stop()
        close = getattr(self._probe, "close", None)
        if close is None:
            return succeed(None)
        d = maybeDeferred(close)
        d.addErrback(lambda f: self.log.failure("probe {probe} failed to close", f,
                                                probe=self._config.probe))
        return d

    def reconfigure(self, config, probe=None) -> Deferred:
        """
        A reload changed this process's health settings: apply them to the
        running schedule without losing the statistics and history.

        The next probe is moved to the last slot plus the new C{interval}
        (so a shorter interval takes effect at once, not after the old
        one); a probe in flight with a replaced probe object is cancelled,
        since its answer would speak for the old settings.

        @param probe: the probe built for the new settings, or C{None} to
            keep the current one.
        @return: a Deferred firing once the replaced probe released what it
            held.
        """
        old, self._config = self._config, config
        if config.history != self.results.maxlen:
            self.results = deque(self.results, maxlen=config.history)
        closed = succeed(None)
        abandoned = False
        if probe is not None and probe is not self._probe:
            previous, self._probe = self._probe, probe
            abandoned = self._inFlight is not None
            self._abandonCheck()
            close = getattr(previous, "close", None)
            if close is not None:
                closed = maybeDeferred(close)
                closed.addErrback(lambda f: self.log.failure(
                    "probe {probe} failed to close", f, probe=old.probe))
        if not self._running or self._inFlight is not None:
            return closed  # the new timing applies when the probe in flight answers
        if self._call is None and not abandoned:
            return closed  # waiting for a slot (probe cap): it runs with the new settings
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        now = self._clock.seconds()
        if self._starting:
            self._gap = min(self._gap, config.start_interval)
            self._schedule(max(0.0, min(self._due, now + self._gap) - now))
        else:
            # The slot of the last probe (the abandoned one's, or the one
            # before the pending call), plus the new interval.
            slot = self._due if abandoned else self._due - old.interval
            self._schedule(max(0.0, slot + config.interval - now))
        return closed

    def _startTimeout(self) -> None:
        self._timeoutCall = None
        if self._starting:
            # This run failed to start and is being ended: a late success
            # must not report it ready.
            self.stop()
            self._process.startTimedOut(
                f"not ready within {float(self._config.start_timeout)}s"
                + (f" (last check: {self.lastStartFailure.reason})" if self.lastStartFailure else "")
            )

    def _schedule(self, delay: float) -> None:
        self._due = self._clock.seconds() + delay
        self._call = self._clock.callLater(delay, self._check)

    def _check(self) -> None:
        self._call = None
        if self._gate is not None:
            if not self._gate.acquire(self, self._checkNow):
                return  # queued: _checkNow runs when a slot frees
        self._checkNow()

    def _checkNow(self) -> None:
        self._holding = self._gate is not None
        due = self._due
        startedAt = self._clock.seconds()
        # What maybeDeferred and addTimeout would do, without their
        # closures and wrapping: this runs once per probe.
        try:
            d = self._probe.check()
        except Exception:
            d = fail()
        if not isinstance(d, Deferred):
            d = succeed(d)
        self._inFlight = d
        if not d.called:
            self._deadline = self._clock.callLater(self._config.timeout, d.cancel)
        d.addCallbacks(self._stamp, self._failed)
        d.addCallback(self._handle, startedAt, due, d)

    @staticmethod
    def _stamp(result) -> ProbeResult:
        if not isinstance(result, ProbeResult):
            result = ProbeResult(healthy=bool(result), reason="ok" if result else "failed")
        return result

    def _failed(self, failure) -> ProbeResult:
        return ProbeResult(healthy=False, reason=describeFailure(failure, self._config.timeout))

    def _cancelDeadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _handle(self, result: ProbeResult, startedAt: float, due: float, d) -> None:
        if self._inFlight is not d:
            return  # cancelled by stop(): the run is over
        self._inFlight = None
        self._cancelDeadline()
        self._release()
        now = self._clock.seconds()
        result = ProbeResult(result.healthy, result.reason, result.detail, now - startedAt, now,
                             result.limit)
        if result.limit is not None:
            self.limitHits[result.limit] = self.limitHits.get(result.limit, 0) + 1
        wasStarting = self._starting
        if self._starting and self._managed and not result.healthy:
            # Polling a process that is still starting: failures are
            # expected and not counted; the last one explains a timeout.
            # It still breaks a run of successes (success_threshold).
            self.lastStartFailure = result
            self.consecutiveSuccesses = 0
        else:
            self._record(result)
            try:
                self._onResult(self._process.name, result)
            except Exception:
                self.log.failure("health result observer failed")
            self._decide(result)
        if self._running and self._call is None:
            if self._starting:
                self._gap = min(self._config.start_interval, self._gap * 2)
                self._schedule(self._gap)
            else:
                # Keep to the schedule and its phase, like LoopingCall: a
                # late reactor does not stretch the period, and slots missed
                # while a probe was slow (or the reactor busy) are skipped
                # rather than bunched up "now" with every other process's.
                interval = self._config.interval
                if wasStarting:
                    # Just ready: the steady schedule starts at this run's phase.
                    due -= self._phase * interval
                missed = max(0, math.ceil((now - due - interval) / interval - 1e-9))
                self._schedule(max(0.0, due + (missed + 1) * interval - now))

    def _record(self, result: ProbeResult) -> None:
        self.results.append(result)
        self.total += 1
        if result.healthy:
            self.successes += 1
            self.consecutiveSuccesses += 1
            if (self.consecutiveFailures > 0 or self._starting) and self.consecutiveSuccesses == 1:
                self.log.info("{label} health check: Healthy", label=self._label,
                              process=self._process.name, latency=result.latency)
            self.consecutiveFailures = 0
        else:
            self.failures += 1
            self.consecutiveSuccesses = 0
            self.consecutiveFailures += 1
            n = self.consecutiveFailures
            # Log the first failures one by one, then a summary every
            # 10th, so a dead backend does not flood the log.
            if n <= self._config.failure_threshold or n % 10 == 0:
                self.log.warn(
                    "{label} health check failed: {reason}"
                    + (" ({n} consecutive failures)" if n > 1 else ""),
                    label=self._label, reason=result.reason, n=n,
                    process=self._process.name,
                )

    def _decide(self, result: ProbeResult) -> None:
        config = self._config
        if not self._managed:
            if result.healthy and self.consecutiveSuccesses >= config.success_threshold:
                self._starting = False
                self._process.monitorStatus("running", result.reason)
            elif not result.healthy and self.consecutiveFailures >= config.failure_threshold:
                self._starting = False
                self._process.monitorStatus("unhealthy", result.reason)
            return
        if result.healthy:
            if self.consecutiveSuccesses >= config.success_threshold:
                if self._starting:
                    self._starting = False
                    if self._timeoutCall is not None and self._timeoutCall.active():
                        self._timeoutCall.cancel()
                    self._timeoutCall = None
                self._process.healthReady()
            return
        if self._starting:
            return  # only start_timeout ends a start
        if self._clock.seconds() - self._spawnedAt < config.start_period:
            self.consecutiveFailures = 0  # failures in the start period do not count
            return
        if self.consecutiveFailures >= config.failure_threshold:
            self._process.healthFailed(result.reason)
