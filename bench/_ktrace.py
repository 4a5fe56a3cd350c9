"""
Kernel timestamps of each respawn, from four scheduler/signal tracepoints
recorded system-wide with C{perf record} (root, or a permissive
C{perf_event_paranoid}):

- C{signal:signal_generate} C{sig=9} to the victim: the kill;
- C{signal:signal_generate} C{sig=17} sent by the victim to its parent: the
  kernel has finished tearing the victim down (C{exit_notify}: the parent
  can reap it from now on) -- "old child gone";
- C{sched:sched_process_fork} whose child is the new pid: the new process
  exists -- "new pid";
- C{sched:sched_process_exec} of the new pid: each program it execs (the
  orchestrator's wrappers, then the command).

The C{/proc} scanner of C{respawn.py} sees the same moments only when it
gets a CPU, which on 2 busy cores can be milliseconds late (it competes
with the dying child's teardown and the new child's start-up), so its
split "gone / new pid" is coarse; these are exact to the microsecond, at
the cost of needing C{perf}.  The overhead of four rare tracepoints is
small (the medians with and without tracing are within the run-to-run
noise, see C{bench/RESULTS.md}).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

EVENTS = ["signal:signal_generate", "sched:sched_process_fork", "sched:sched_process_exec"]

_LINE = re.compile(r"\s*(.+?)\s+(-?\d+)/(-?\d+)\s+([\d.]+):\s+(\S+?):\s+(.*)")


def available() -> str | None:
    """
    C{None} if tracing can be used here, else why not.
    """
    if shutil.which("perf") is None:
        return "perf is not installed"
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            paranoid = int(f.read())
    except (OSError, ValueError):
        paranoid = 2
    if os.geteuid() != 0 and paranoid > -1:
        return "needs root (or kernel.perf_event_paranoid = -1) for system-wide tracepoints"
    probe = subprocess.run(["perf", "record", "-q", "-a", "-o", "/dev/null", "-e", EVENTS[0],
                            "--", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return "perf record failed: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
    return None


class Trace:
    """
    One C{perf record} over a stretch of the bench.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Trace":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        argv = ["perf", "record", "-q", "-a", "-o", self.path]
        for event in EVENTS:
            argv += ["-e", event]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        time.sleep(1.0)  # perf opens its events before the first kill
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def events(self) -> list[tuple]:
        out = subprocess.run(["perf", "script", "-i", self.path, "-F", "comm,pid,tid,time,event,trace"],
                             capture_output=True, text=True, timeout=600).stdout
        found = []
        for line in out.splitlines():
            m = _LINE.match(line)
            if m:
                found.append((float(m.group(4)), int(m.group(2)), m.group(5), m.group(6)))
        return found

    def respawns(self, pairs: list[tuple[int, int]]) -> list[dict]:
        """
        For each C{(killed pid, new pid)}: seconds from the kill to the
        victim's SIGCHLD ("gone"), from there to the new pid's fork, and
        from the fork to each exec of the new pid.
        """
        kill, gone, born, execs = {}, {}, {}, {}
        for t, pid, event, text in self.events():
            if event == "signal:signal_generate":
                m = re.match(r"sig=(\d+) .*? pid=(\d+)", text)
                if not m:
                    continue
                sig, target = int(m.group(1)), int(m.group(2))
                if sig == signal.SIGKILL and target not in kill:
                    kill[target] = t
                elif sig == signal.SIGCHLD and pid not in gone:
                    gone[pid] = t
            elif event == "sched:sched_process_fork":
                m = re.search(r"child_pid=(\d+)", text)
                if m:
                    born.setdefault(int(m.group(1)), t)
            elif event == "sched:sched_process_exec":
                m = re.search(r"filename=(\S+)", text)
                if m:
                    execs.setdefault(pid, []).append((t, m.group(1)))
        results = []
        for old, new in pairs:
            if old not in kill or old not in gone or new not in born:
                continue
            results.append({
                "old": old, "new": new,
                "kill_gone": gone[old] - kill[old],
                "gone_new": born[new] - gone[old],
                "kill_new": born[new] - kill[old],
                "execs": [(t - born[new], name) for t, name in execs.get(new, [])],
            })
        return results
