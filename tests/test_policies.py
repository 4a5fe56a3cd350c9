"""
Unit tests for the built-in restart policies (L{orchestrator.builtin.policies}): pure
functions of a L{RestartHistory}, so every delay is exact.
"""

from __future__ import annotations

import pytest

from orchestrator.config.types import RestartConfig, freeze
from orchestrator.errors import ConfigError
from orchestrator.supervision.policy import ExitRecord, RestartHistory
from orchestrator.builtin.policies import Always, Backoff, Never, OnFailure, register_restart_policies
from tests.fakes import loadText


def _history(attempt: int, wasReady: bool = False, sample: float = 0.5,
             clean: bool = False) -> RestartHistory:
    exits = tuple(
        ExitRecord(pid=100 + i, exit_code=0 if clean else 1, signal=None, at=float(i),
                   uptime=1.0, clean=clean)
        for i in range(attempt)
    )
    return RestartHistory(attempt=attempt, exits=exits, was_ready=wasReady, sample=sample)


def _restart(**options) -> RestartConfig:
    return RestartConfig(options=freeze(options))


def test_builtinsRegisteredThroughTheHook():
    """The four built-in policies are registered through register_restart_policies under their names."""
    assert {p.name for p in register_restart_policies()} == {"always", "on-failure", "never", "backoff"}


def test_builtinsAreTheLoadedKinds():
    """A loaded configuration offers exactly the built-in policies by name."""
    loaded = loadText("processes:\n  backend:\n    command: ['{python}', '-c', 'pass']\n")
    assert loaded.kinds.policies == {
        "always": Always, "on-failure": OnFailure, "never": Never, "backoff": Backoff}


def test_unknownPolicyIsAConfigError():
    """A policy name no plugin registered is a configuration error naming the path."""
    with pytest.raises(ConfigError) as info:
        loadText("processes:\n  backend:\n    command: ['{python}']\n    restart: {policy: sometimes}\n")
    assert "processes.backend.restart.policy" in str(info.value.problems)


def test_policyOptionIsValidated():
    """A policy's own options are validated by its config_schema (backoff.factor below 1)."""
    with pytest.raises(ConfigError) as info:
        loadText("processes:\n  backend:\n    command: ['{python}']\n"
                 "    restart: {policy: backoff, backoff: {factor: 0.5}}\n")
    assert "processes.backend.restart.backoff.factor" in str(info.value.problems)


@pytest.mark.parametrize("policy", [Always, OnFailure])
def test_fixedIntervalImmediateAfterReadyRun(policy):
    """always/on-failure restart at once after a run that became ready."""
    assert policy(_restart(interval=5)).next_delay(_history(1, wasReady=True)) == 0.0


@pytest.mark.parametrize("policy", [Always, OnFailure])
def test_fixedIntervalWaitsForRepeatedFailures(policy):
    """always/on-failure wait the interval for a repeated failure or a run that never became ready."""
    p = policy(_restart(interval=5))
    assert p.next_delay(_history(1, wasReady=False)) == 5.0
    assert p.next_delay(_history(2, wasReady=True)) == 5.0
    assert p.next_delay(_history(7)) == 5.0


def test_fixedIntervalDefault():
    """Without options the interval is 1 second."""
    assert Always(_restart()).next_delay(_history(2)) == 1.0


def test_onFailureDoesNotRestartCleanExits():
    """on-failure and never do not restart a clean exit; always and backoff do."""
    assert OnFailure.restart_on_success is False
    assert Never.restart_on_success is False
    assert Always.restart_on_success is True
    assert Backoff.restart_on_success is True


def test_neverGivesUp():
    """never answers None (give up) whatever the history."""
    p = Never(_restart())
    assert p.next_delay(_history(1, wasReady=True)) is None
    assert p.next_delay(_history(3)) is None


def test_backoffGrowsExponentiallyToTheCap():
    """backoff waits initial*factor**(attempt-1), capped at max (no jitter)."""
    p = Backoff(_restart(backoff={"initial": 0.1, "factor": 2, "max": 1, "jitter": 0}))
    delays = [p.next_delay(_history(n)) for n in range(1, 8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoffFirstAfterReadyRunIsImmediate():
    """backoff restarts at once after a ready run, then attempt 2 waits initial*factor."""
    p = Backoff(_restart(backoff={"initial": 1, "factor": 3, "max": 30, "jitter": 0}))
    assert p.next_delay(_history(1, wasReady=True)) == 0.0
    assert p.next_delay(_history(2, wasReady=True)) == 3.0


def test_backoffJitterUsesTheSample():
    """Jitter spreads the delay by +/- jitter according to the injected sample, exactly."""
    p = Backoff(_restart(backoff={"initial": 4, "factor": 2, "max": 30, "jitter": 0.25}))
    assert p.next_delay(_history(1, sample=0.0)) == 3.0
    assert p.next_delay(_history(1, sample=0.5)) == 4.0
    assert p.next_delay(_history(1, sample=1.0)) == 5.0
    assert p.next_delay(_history(2, sample=0.75)) == 9.0


def test_backoffJitterNeverExceedsTheCap():
    """Upward jitter never pushes the delay beyond max."""
    p = Backoff(_restart(backoff={"initial": 10, "factor": 2, "max": 10, "jitter": 0.5}))
    assert p.next_delay(_history(3, sample=0.999)) == 10.0
    assert p.next_delay(_history(3, sample=0.0)) == 5.0


def test_backoffInitialZeroNeverWaits():
    """backoff.initial: 0 restarts at once every time (a crash loop is bounded by max_attempts only)."""
    p = Backoff(_restart(backoff={"initial": 0, "jitter": 0}))
    assert [p.next_delay(_history(n)) for n in (1, 2, 10)] == [0.0, 0.0, 0.0]


def test_backoffDefaults():
    """Defaults: initial 0.1 s, factor 2, max 30 s, jitter 10 %."""
    p = Backoff(_restart())
    assert p.next_delay(_history(1, sample=0.5)) == pytest.approx(0.1)
    assert p.next_delay(_history(1, sample=1.0)) == pytest.approx(0.11)
    assert p.next_delay(_history(20, sample=0.5)) == 30.0


def test_policiesArePure():
    """The same history always gives the same delay: no clock or random source inside."""
    p = Backoff(_restart(backoff={"initial": 1, "jitter": 0.5}))
    history = _history(3, sample=0.3)
    assert {p.next_delay(history) for _ in range(5)} == {p.next_delay(history)}
