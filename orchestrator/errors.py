"""
Errors the orchestrator reports to an operator, all in one place: the
configuration cannot be used, a command conflicts with a state, a child
cannot be spawned or did not come up.
"""

from __future__ import annotations

__all__ = ["AlreadyRunning", "ConfigError", "SpawnError", "StartFailed", "StateError"]


class ConfigError(Exception):
    """
    The configuration (or the plugins it selects) cannot be used.

    Every problem found is reported at once, each already located
    (C{FILE:LINE:COL: json.path: message} or C{env NAME: message}).

    @ivar problems: the located messages, in file order.
    """

    def __init__(self, problems) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class AlreadyRunning(ConfigError):
    """
    Another live orchestrator owns this configuration's state file (exit
    code 3 under twistd): starting would fight over the same children.
    """


class StateError(Exception):
    """
    A command conflicts with a process's state (the API answers 409), for
    instance a start in monitor-only mode.
    """


class SpawnError(Exception):
    """
    The child could not be spawned (missing executable, bad working
    directory...).  The message is the operator's explanation.
    """


class StartFailed(Exception):
    """
    A start did not reach C{running}: the child exited, could not be
    spawned, or was not ready within C{health.start_timeout}.

    @ivar process: the process's name.
    @ivar reason: why, for an operator (C{"exit code 1"},
        C{"not ready within 60s (last check: Connection refused)"}).
    @ivar output: the child's last output lines (bounded), often the real
        reason (C{"listen tcp :3000: bind: address already in use"}).
    """

    def __init__(self, process: str, reason: str, output: tuple[str, ...] = ()) -> None:
        super().__init__(f"{process} failed to start: {reason}")
        self.process = process
        self.reason = reason
        self.output = tuple(output)
