#!/usr/bin/env python3
"""
Draw C{bench/results.png} from a scale run: one C{/metrics} scrape's time
(C{bench/out/scale.json}) and the orchestrator's CPU while HTTP-probing
every process each second (C{bench/out/probes-now.json} and
C{probes-before.json}, written by C{bench/probes.py --name}), against the
number of processes, before and after, with the issue's targets.

matplotlib lives in the bench's own venv, C{bench/.venv-plot} (gitignored),
created on first use: run this script with any Python.

Usage: python bench/plot_scale.py [--out bench/results.png]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")
VENV = os.path.join(HERE, ".venv-plot")


def _ensureMatplotlib() -> None:
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.executable) == os.path.realpath(python):
        return
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "matplotlib"], check=True)
        print(f"fetched matplotlib into {VENV}")
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


def _load(name: str):
    path = os.path.join(OUT, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(HERE, "results.png"))
    args = parser.parse_args()
    _ensureMatplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = _load("scale") or {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    byTool: dict[str, list] = {}
    for row in scale.get("metrics", []):
        byTool.setdefault(row["tool"], []).append((row["processes"], row["scrape_ms"]))
    for tool, points in byTool.items():
        points.sort()
        left.plot([p for p, _ in points], [ms for _, ms in points], marker="o", label=tool)
    left.plot([500, 1000], [25, 50], "k--", marker="x", label="target (25 ms / 50 ms)")
    left.set_yscale("log")
    left.set_xlabel("HTTP-probed processes (1 s interval)")
    left.set_ylabel("one /metrics scrape (ms, log scale)")
    left.set_title("/metrics scrape time")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)

    for name, label in (("probes-now", "orchestrator"), ("probes-before", "before (8dc4c34)")):
        data = _load(name)
        if not data:
            continue
        points = sorted((r["processes"], r["orch_cpu_percent"]) for r in data["capacity"]
                        if "orch_cpu_percent" in r)
        right.plot([p for p, _ in points], [c for _, c in points], marker="o", label=label)
    right.plot([500, 1000], [10, 20], "k--", marker="x", label="target (10% / 20%)")
    right.set_xlabel("HTTP-probed processes (1 s interval)")
    right.set_ylabel("orchestrator CPU (% of one core)")
    right.set_title("probe CPU")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle("orchestrator at scale (bench/scale.py, bench/probes.py; one run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
