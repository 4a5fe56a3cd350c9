"""
What every hostile test measures on the real orchestrator under attack:
its resident memory, its open descriptors, and whether a crashed backend is
still respawned promptly.  Read from C{/proc}, so Linux only.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

from tests import harness

__all__ = ["Usage", "rssBytes", "fdCount", "sample", "respawnSeconds", "assertRespawns",
           "RESPAWN_BOUND"]

#: A crash is restarted within this many seconds during an attack (the
#: median of the samples; no sample may take twice as long).
RESPAWN_BOUND = 1.0


def rssBytes(pid: int) -> int:
    """
    Resident set size of C{pid} in bytes (C{VmRSS} of C{/proc/PID/status}).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def fdCount(pid: int) -> int:
    """
    Number of open file descriptors of C{pid}.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Usage:
    """
    RSS and descriptor samples of one process over an attack.

    @ivar rss: bytes, one per sample.
    @ivar fds: descriptor counts, one per sample.
    """

    pid: int
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def take(self) -> None:
        self.rss.append(rssBytes(self.pid))
        self.fds.append(fdCount(self.pid))

    @property
    def rssGrowth(self) -> int:
        """
        Largest RSS seen minus the first sample, in bytes.
        """
        return max(self.rss) - self.rss[0]

    @property
    def fdGrowth(self) -> int:
        """
        Largest descriptor count seen minus the first sample.
        """
        return max(self.fds) - self.fds[0]

    def assertBounded(self, rssBytes: int, fds: int) -> None:
        """
        Fail with the samples if RSS grew by more than C{rssBytes} or the
        descriptor count by more than C{fds}.
        """
        assert self.rssGrowth <= rssBytes, (
            f"RSS grew by {self.rssGrowth / 2**20:.1f} MiB (bound {rssBytes / 2**20:.1f} MiB): "
            f"{[round(r / 2**20, 1) for r in self.rss]}")
        assert self.fdGrowth <= fds, f"fds grew by {self.fdGrowth} (bound {fds}): {self.fds}"


def sample(pid: int, seconds: float, every: float = 0.2, during=None) -> Usage:
    """
    Sample C{pid}'s RSS and fds every C{every} seconds for C{seconds}
    seconds (bounded), calling C{during()} between samples if given (to
    keep an attack going from the test's own thread).
    """
    usage = Usage(pid)
    deadline = time.monotonic() + seconds
    usage.take()
    while time.monotonic() < deadline:
        if during is not None:
            during()
        time.sleep(every)
        usage.take()
    return usage


def respawnSeconds(orchestrator: harness.Orchestrator, name: str = "backend",
                   timeout: float = 10.0) -> float:
    """
    SIGKILL the supervised process C{name} and return how long, in
    seconds, until the orchestrator reports a new pid for it (read over the
    admin API, so the API's own latency under attack is included).
    """
    old = orchestrator.status(name)["pid"]
    assert old, f"{name} has no pid to kill"
    started = time.monotonic()
    os.kill(old, signal.SIGKILL)

    def newPid():
        try:
            pid = orchestrator.status(name)["pid"]
        except OSError:
            return None
        return pid if pid and pid != old else None

    harness.waitFor(newPid, timeout, interval=0.01, what=f"{name} to be respawned")
    return time.monotonic() - started


def assertRespawns(orchestrator: harness.Orchestrator, name: str = "backend",
                   samples: int = 3, bound: float = RESPAWN_BOUND) -> list[float]:
    """
    Kill C{name} C{samples} times (waiting for each respawn) and fail
    unless the median respawn took less than C{bound} seconds and none
    took twice as long: one sample may land on a busy moment of a shared
    two-core machine, a slow median is a finding.  Returns the samples.
    """
    import statistics

    latencies = [respawnSeconds(orchestrator, name) for _ in range(samples)]
    assert statistics.median(latencies) < bound and max(latencies) < 2 * bound, (
        f"{name} respawns during the attack took {[round(x, 3) for x in latencies]} s "
        f"(bound: median under {bound} s, none over {2 * bound} s)")
    return latencies
