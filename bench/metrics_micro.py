#!/usr/bin/env python3
"""
Not part of C{run_all.py}: the CPU of one C{/metrics} rendering, in
memory (an orchestrator on the tests' fake process reactor, N probed
processes, every one probed since the last scrape so all their health
lines are stale, the worst case), against prometheus_client rendering the
same registry from scratch (what every scrape did before).  Also the
longest single step of the sliced rendering (what one reactor turn
holds at most).  Run it with the project's venv Python from the
repository root.

Usage: .venv/bin/python bench/metrics_micro.py [--levels 1,100,500,1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client.exposition import generate_latest  # noqa: E402

from tests.test_metrics import Harness, manyProcesses  # noqa: E402


def measure(n: int, repeat: int) -> dict:
    h = Harness(manyProcesses(n)).start()
    h.advance(0.5)
    h.advance(5)
    metrics = h.orchestrator.metrics
    scratch, refresh, assemble, longest = [], [], [], 0.0
    for _ in range(repeat):
        h.advance(5)  # a probe result for every process: all stale
        t0 = time.perf_counter()
        generate_latest(metrics.registry)
        scratch.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for lines in metrics.stale():
            t1 = time.perf_counter()
            metrics.refresh(lines)
            longest = max(longest, time.perf_counter() - t1)
        refresh.append(time.perf_counter() - t0)
        start = t0 = time.perf_counter()
        result: list = []
        for _ in metrics.renderSteps("", result):
            t1 = time.perf_counter()
            longest = max(longest, t1 - t0)
            t0 = t1
        end = time.perf_counter()
        longest = max(longest, end - t0)
        assemble.append(end - start)
    return {"processes": n, "from_scratch_ms": min(scratch) * 1e3, "refresh_ms": min(refresh) * 1e3,
            "assemble_ms": min(assemble) * 1e3, "longest_step_ms": longest * 1e3,
            "bytes": len(result[0])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,100,500,1000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| processes | from scratch (before) | refresh all stale | assemble | longest step | bytes |")
    print("|---|---|---|---|---|---|")
    for n in [int(x) for x in args.levels.split(",")]:
        r = measure(n, args.repeat)
        print(f"| {n} | {r['from_scratch_ms']:.1f} ms | {r['refresh_ms']:.1f} ms | {r['assemble_ms']:.1f} ms "
              f"| {r['longest_step_ms']:.2f} ms | {r['bytes']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
