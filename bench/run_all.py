#!/usr/bin/env python3
"""
Run every benchmark in one go (C{make bench}): respawn latency and spawn
cost, probe capacity and unhealthy-to-restart latency, admin API load.

Each bench runs in its own Python process, one after the other (never
concurrently: they measure CPU and latency on a small machine), writes
C{bench/out/NAME.json}, and prints its tables; this script collects the
tables with the machine's description into C{bench/out/summary.md}, the
raw material of C{bench/RESULTS.md}.

Usage: python bench/run_all.py [--quick] [--only respawn,probes,api]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import OUT, ensureVenv, log, machineInfo, pipVersion  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

FULL = {
    "respawn": ["--samples", "30"],
    "probes": ["--levels", "50,200,500,1000", "--window", "20", "--samples", "5"],
    "api": ["--duration", "5", "--many", "100"],
    "scale": ["--idle", "30"],
}
QUICK = {
    "respawn": ["--samples", "5", "--spawns", "50", "--idle", "1"],
    "probes": ["--levels", "50,200", "--window", "5", "--warmup", "3", "--samples", "2"],
    "api": ["--duration", "2", "--many", "20", "--settle", "1"],
    "scale": ["--idle", "5", "--sizes", "1,100", "--levels", "1,100", "--respawns", "5",
              "--status-duration", "2"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sample counts (a smoke run)")
    parser.add_argument("--only", default="respawn,probes,api,scale")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    # Install the other supervisors first, so no bench pays for it.
    notes = {}
    for name, package, executable in (("supervisor", "supervisor", "supervisord"),
                                      ("circus", "circus", "circusd")):
        path, note = ensureVenv(name, package, executable)
        notes[package] = (pipVersion(path, package) if path else None, note)
        log(f"{package}: {notes[package][0] or 'NOT AVAILABLE'} ({note})")
    info = machineInfo()
    sections, failed = [], []
    for name in [n for n in args.only.split(",") if n]:
        command = [sys.executable, os.path.join(HERE, f"{name}.py")] + plan[name]
        log(f"run_all: {' '.join(command)}")
        t0 = time.monotonic()
        code = subprocess.run(command, timeout=1800).returncode
        if code != 0:
            failed.append(name)
        path = os.path.join(OUT, f"{name}.json")
        table = "(no result)"
        if os.path.exists(path) and os.path.getmtime(path) >= time.time() - (time.monotonic() - t0) - 1:
            with open(path) as f:
                table = json.load(f).get("table", table)
        sections.append(f"## {name}\n\n`{' '.join(['python', 'bench/' + name + '.py'] + plan[name])}`"
                        f" ({time.monotonic() - t0:.0f} s)\n\n{table}\n")
    header = (f"# Bench run {info['date']}\n\n"
              f"- machine: {info['nproc']} CPUs, {info['cpu']}, kernel {info['kernel']}, "
              f"load average before {' '.join(info['loadavg'])}\n"
              f"- Python {info['python']}, Twisted {info['twisted']}\n"
              + "".join(f"- {pkg}: {ver or 'not available'} ({note})\n" for pkg, (ver, note) in notes.items())
              + f"- mode: {'quick' if args.quick else 'full'}; total {time.monotonic() - started:.0f} s\n\n")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "summary.md"), "w") as f:
        f.write(header + "\n".join(sections))
    print(header + "\n".join(sections))
    if failed:
        log(f"run_all: failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
