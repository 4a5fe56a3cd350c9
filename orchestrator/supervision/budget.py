"""
The restart budget of one process: how many automatic restarts are left in
the current window, and what the restart policy says about the next one.

Kept apart from the child's life cycle because it is pure bookkeeping: no
clock, no child, no events.  The process tells it about exits and asks it
for a decision; a reload hands it a new C{restart} block and policy object
without losing the attempts already made.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from twisted.logger import Logger

from orchestrator.config.types import RestartConfig
from orchestrator.supervision.policy import ExitRecord, RestartHistory

__all__ = ["RestartBudget", "Decision", "WINDOW_EXITS_KEPT"]

#: The most exits of the current window kept for the policy.  A crash loop
#: that never becomes ready never resets its window; without a bound each
#: restart would retain one more record for as long as it loops.
WINDOW_EXITS_KEPT = 64


@dataclass(frozen=True)
class Decision:
    """
    What happens after an exit: restart in C{delay} seconds (attempt
    C{attempt}), or give up (C{delay} is C{None}) because of C{why}.
    """

    delay: float | None
    attempt: int
    why: str = ""


class RestartBudget:
    """
    Attempts in the current window, the window's exits, and whether
    automatic restarts were given up.

    @param config: the process's C{restart} block.
    @param policy: the restart policy object (C{next_delay(history)}).
    @param random: draws the jitter sample for each decision.
    """

    log = Logger()

    def __init__(self, config: RestartConfig, policy, random: Callable[[], float]) -> None:
        self.config = config
        self.policy = policy
        self._random = random
        self.attempts = 0
        self.gaveUp = False
        # Made at the first exit: most processes never exit, and an empty
        # deque costs 760 bytes.
        self._window: deque[ExitRecord] | None = None

    @property
    def window(self) -> Sequence[ExitRecord]:
        """
        The exits of the current window, oldest first (at most
        L{WINDOW_EXITS_KEPT}).
        """
        return self._window if self._window is not None else ()

    def reconfigure(self, config: RestartConfig, policy) -> None:
        """
        A reload's new settings: attempts and window are kept (the next
        decision applies the new cap and policy to them).
        """
        self.config = config
        self.policy = policy

    def clear(self) -> None:
        """
        A start or restart by command: a new budget, C{gave_up} cleared.
        """
        self.gaveUp = False
        self.reset()

    def reset(self) -> None:
        """
        The process ran healthy for C{reset_after}: the window starts over.
        """
        self.attempts = 0
        self._window = None

    @property
    def restartsOnSuccess(self) -> bool:
        """
        Whether a clean exit is restarted (the C{on-failure} policy says no).
        """
        return getattr(self.policy, "restart_on_success", True)

    def decide(self, record: ExitRecord, wasReady: bool) -> Decision:
        """
        Record an exit (or a failed spawn) in the window and decide.

        @param wasReady: whether the run that ended had become ready.
        """
        if self._window is None:
            self._window = deque(maxlen=WINDOW_EXITS_KEPT)
        self._window.append(record)
        attempt = self.attempts + 1
        if attempt > self.config.max_attempts:
            return self._giveUp(f"Maximum restart attempts ({self.config.max_attempts}) exceeded")
        history = RestartHistory(attempt=attempt, exits=tuple(self.window),
                                 was_ready=wasReady, sample=self._random())
        try:
            delay = self.policy.next_delay(history)
        except Exception:
            self.log.failure("restart policy {policy} failed", policy=self.config.policy)
            delay = None
        if delay is None:
            return self._giveUp(f"restart policy {self.config.policy!r} gave up")
        self.attempts = attempt
        return Decision(max(0.0, float(delay)), attempt)

    def _giveUp(self, why: str) -> Decision:
        self.gaveUp = True
        return Decision(None, self.attempts, why)
