"""
Errors the orchestrator reports to an operator.
"""

from __future__ import annotations

__all__ = ["ConfigError", "StateError"]


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


class StateError(Exception):
    """
    A command conflicts with a process's state (the API answers 409), for
    instance a start in monitor-only mode.
    """
