"""
Built-in restart policies: C{always}, C{on-failure}, C{never}, C{backoff}.

All share one rule that keeps a one-off crash cheap and a crash loop slow:
the first automatic restart of a run that had become ready happens at once;
only repeated failures in the window wait.
"""

from __future__ import annotations

from orchestrator.plugin import RestartHistory, hookimpl

__all__ = ["Always", "OnFailure", "Never", "Backoff"]


def _immediate(history: RestartHistory) -> bool:
    return history.attempt == 1 and history.was_ready


class _FixedInterval:
    """
    Restart after a fixed pause (at once after a healthy run).
    """

    restart_on_success = True
    config_schema = {
        "type": "object",
        "properties": {
            "interval": {
                "format": "duration",
                "minimum": 0,
                "default": 1,
                "description": "Seconds before a restart that is not the first after a healthy run.",
            }
        },
    }

    def __init__(self, config) -> None:
        self._interval = float(config.options.get("interval", 1))

    def next_delay(self, history: RestartHistory) -> float | None:
        return 0.0 if _immediate(history) else self._interval


class Always(_FixedInterval):
    """
    Restart after every exit, clean or not.
    """

    name = "always"


class OnFailure(_FixedInterval):
    """
    Restart only after a failure: an exit code outside
    C{success_exit_codes}, a signal, or an unhealthy process.  A clean exit
    leaves the process C{stopped}.
    """

    name = "on-failure"
    restart_on_success = False


class Never:
    """
    Never restart automatically.
    """

    name = "never"
    restart_on_success = False
    config_schema: dict = {"type": "object", "properties": {}}

    def __init__(self, config) -> None:
        pass

    def next_delay(self, history: RestartHistory) -> float | None:
        return None


class Backoff:
    """
    Exponential backoff: C{initial * factor ** (attempt - 1)}, capped at
    C{max}, spread by +/- C{jitter} (a fraction); the first restart after a
    healthy run is immediate.
    """

    name = "backoff"
    restart_on_success = True
    config_schema = {
        "type": "object",
        "properties": {
            "backoff": {
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "description": "Exponential backoff between automatic restarts.",
                "properties": {
                    "initial": {"format": "duration", "minimum": 0, "default": 0.1,
                                "description": "Base delay (seconds): automatic restart n of the window waits initial * factor^(n-1); the first after a healthy run is immediate."},
                    "factor": {"type": "number", "minimum": 1, "default": 2,
                               "description": "Growth per attempt."},
                    "max": {"format": "duration", "minimum": 0, "default": 30,
                            "description": "Cap on the delay (seconds)."},
                    "jitter": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1,
                               "description": "Random spread as a fraction of the delay (0.1 = +/-10%)."},
                },
            }
        },
    }

    def __init__(self, config) -> None:
        options = config.options.get("backoff", {})
        self._initial = float(options.get("initial", 0.1))
        self._factor = float(options.get("factor", 2))
        self._max = float(options.get("max", 30))
        self._jitter = float(options.get("jitter", 0.1))

    def next_delay(self, history: RestartHistory) -> float | None:
        if _immediate(history):
            return 0.0
        delay = min(self._max, self._initial * self._factor ** (history.attempt - 1))
        delay *= 1 + self._jitter * (2 * history.sample - 1)
        return max(0.0, min(self._max, delay))


@hookimpl
def register_restart_policies():
    return [Always, OnFailure, Never, Backoff]
