#!/usr/bin/env python3
"""
An output flood against a real orchestrator: one child writes 100-byte
lines to stdout as fast as it can, with C{log.echo} on (the default), next
to a sibling that is SIGKILLed a few times.

Measured, on the real C{twistd -n orchestrator} (read from C{/proc}):

- the orchestrator's RSS and open descriptors, sampled every 0.2 s over
  the flood (first, max, last);
- how fast the orchestrator's own log (its stdout, a file) grows, in MB/s;
- respawn latency of the SIGKILLed sibling during the flood: kill -> the
  admin API reports a new pid (so the API's latency under the flood is in
  it too);
- the flooder's CPU share and how many MB/s it got written (its C{wchar}
  from C{/proc/PID/io}): how fast the orchestrator drains the flood.

Usage: .venv/bin/python bench/output_flood.py [--seconds 8] [--kills 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (PYTHON, CPUMeter, freePort, log, rssMB, startOrchestrator, stopAll,  # noqa: E402
                     summary, table, waitFor)


def fdCount(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))

FLOODER = ("import sys\n"
           "line = b'x' * 99 + b'\\n'\n"
           "chunk = line * 640\n"
           "write = sys.stdout.buffer.write\n"
           "while True:\n"
           "    write(chunk)\n")

YAML = """\
admin: {{listen: "tcp:{admin}:interface=127.0.0.1"}}
orchestrator: {{state_dir: "{directory}/state"}}
processes:
  flooder:
    command: ["{python}", "-c", {flooder}]
    health: {{probe: none}}
    restart: {{policy: always, interval: 0, max_attempts: 1000}}
    log: {{echo: true}}
  sibling:
    command: ["/bin/sleep", "100000"]
    health: {{probe: none}}
    start: {{ready_after: 0.1}}
    restart: {{policy: always, interval: 0, max_attempts: 1000}}
"""


def written(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def status(admin: int, name: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/processes/{name}", timeout=10) as r:
        return json.loads(r.read())


def respawn(admin: int, name: str) -> float:
    old = status(admin, name)["pid"]
    started = time.monotonic()
    os.kill(old, signal.SIGKILL)

    def newPid():
        try:
            pid = status(admin, name)["pid"]
        except OSError:
            return None
        return pid if pid and pid != old else None

    waitFor(newPid, 30, 0.01, f"{name} respawned")
    return time.monotonic() - started


def run(seconds: float, kills: int) -> dict:
    directory = tempfile.mkdtemp(prefix="output-flood-")
    try:
        admin = freePort()
        yaml = YAML.format(admin=admin, directory=directory, python=PYTHON,
                           flooder=json.dumps(FLOODER))
        process = startOrchestrator(directory, yaml, admin)
        logPath = os.path.join(directory, "twistd.log")
        waitFor(lambda: status(admin, "flooder")["pid"] and status(admin, "sibling")["pid"], 30,
                what="both processes up")
        flooder = status(admin, "flooder")["pid"]
        time.sleep(1.0)  # the flood is on
        rss, fds = [], []
        size0, t0 = os.path.getsize(logPath), time.monotonic()
        cpu = CPUMeter(flooder).start()
        wchar0 = written(flooder)
        orchestratorCPU = CPUMeter(process.pid).start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rss.append(rssMB(process.pid))
            fds.append(fdCount(process.pid))
            time.sleep(0.2)
        flooderCPU = cpu.stop()
        floodRate = (written(flooder) - wchar0) / seconds / 1e6
        ownCPU = orchestratorCPU.stop()
        logRate = (os.path.getsize(logPath) - size0) / (time.monotonic() - t0) / 1e6
        latencies = []
        for _ in range(kills):
            latencies.append(respawn(admin, "sibling"))
            time.sleep(0.3)
        with open(logPath, encoding="utf-8", errors="replace") as f:
            suppressedLines = sum(1 for line in f if "lines suppressed" in line)
        return {"rss_mb": rss, "fds": fds, "log_mb_per_s": logRate,
                "flooder_cpu_percent": flooderCPU, "flood_mb_per_s": floodRate, "orchestrator_cpu_percent": ownCPU,
                "respawn_s": latencies, "respawn": summary(latencies),
                "suppressed_notices": suppressedLines}
    finally:
        stopAll(graceful=10)
        shutil.rmtree(directory, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    log(f"flooding for {args.seconds}s, then {args.kills} sibling kills")
    data = run(args.seconds, args.kills)
    if args.json:
        print(json.dumps(data))
        return 0
    r = data["respawn"]
    print(table(
        ["orchestrator RSS MB first/max/last", "fds first/max/last", "own log growth",
         "flood drained", "flooder CPU", "orchestrator CPU", "sibling respawn median / max", "'suppressed' notices"],
        [[f"{data['rss_mb'][0]:.1f} / {max(data['rss_mb']):.1f} / {data['rss_mb'][-1]:.1f}",
          f"{data['fds'][0]} / {max(data['fds'])} / {data['fds'][-1]}",
          f"{data['log_mb_per_s']:.2f} MB/s", f"{data['flood_mb_per_s']:.1f} MB/s",
          f"{data['flooder_cpu_percent']:.0f}%",
          f"{data['orchestrator_cpu_percent']:.0f}%",
          f"{r['median'] * 1e3:.0f} ms / {r['max'] * 1e3:.0f} ms", data["suppressed_notices"]]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
