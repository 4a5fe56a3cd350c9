"""
Overhead of max_memory checks at N processes (orchestrator CPU %) and of
replicas: N (time until every instance runs, orchestrator RSS), with a
real twistd and /bin/sleep children.

    .venv/bin/python bench/toolbox.py [--processes 500] [--replicas 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.harness import getJSON, startOrchestrator  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpuSeconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rssMiB(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def allRunning(orch, count: int, deadline: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        processes = getJSON(f"{orch.url}/api/v1/processes", timeout=60)[1]["processes"]
        if sum(p["status"] == "running" for p in processes) >= count:
            return time.monotonic() - start
        time.sleep(0.2)
    raise SystemExit(f"not all {count} running within {deadline}s")


@contextlib.contextmanager
def running(count: int, memory: bool):
    """
    A twistd running C{count} replicas of C{/bin/sleep} (with C{max_memory}
    checked every 5 s if C{memory}), once all run: yields the handle and
    the seconds it took.
    """
    directory = tempfile.mkdtemp(prefix="orch-bench-toolbox-")
    memoryKeys = ("\n                max_memory: 1GiB\n                memory_check_interval: 5"
                  if memory else "")
    try:
        orch = startOrchestrator(directory, f"""
            admin: {{listen: "tcp:{{admin_port}}:interface=127.0.0.1"}}
            processes:
              w:
                command: [/bin/sleep, "3600"]
                replicas: {count}
                start: {{ready_after: 0.5}}{memoryKeys}
        """, timeout=120)
        try:
            yield orch, allRunning(orch, count, 300)
        finally:
            orch.stop(timeout=120)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def idleCPU(count: int, seconds: float, memory: bool) -> float:
    with running(count, memory) as (orch, _):
        time.sleep(2)
        before = cpuSeconds(orch.process.pid)
        time.sleep(seconds)
        return 100 * (cpuSeconds(orch.process.pid) - before) / seconds


def replicas(count: int) -> tuple[float, float]:
    with running(count, memory=False) as (orch, elapsed):
        return elapsed, rssMiB(orch.process.pid)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    options = parser.parse_args()
    without = idleCPU(options.processes, options.seconds, memory=False)
    withChecks = idleCPU(options.processes, options.seconds, memory=True)
    print(f"{options.processes} processes idle: {without:.2f}% CPU without max_memory, "
          f"{withChecks:.2f}% with max_memory checked every 5 s")
    one = replicas(1)
    many = replicas(options.replicas)
    print(f"replicas: 1 -> running in {one[0]:.2f}s, orchestrator RSS {one[1]:.1f} MiB")
    print(f"replicas: {options.replicas} -> all running in {many[0]:.2f}s, orchestrator RSS {many[1]:.1f} MiB")


if __name__ == "__main__":
    main()
