#!/usr/bin/env python3
"""
The status page: its weight, its time to first render against a local
twistd, and what browsers left open on it cost the orchestrator.

 1. Page weight: the bytes of every file the page loads (HTML, CSS, JS,
    icon), as served (no compression), and gzipped for reference.
 2. Time to first render, in headless Chromium: first contentful paint
    and the moment the processes' statuses are on the page (the script's
    C{orchestrator:first-status} performance mark), cold (fresh profile)
    and warm (reloads, files revalidated with their ETag), against an
    orchestrator supervising 1 and C{--many} processes.
 3. The orchestrator's CPU (twistd's own, from /proc) supervising
    C{--many} tiny HTTP backends probed every C{--interval} s, for
    C{--window} s each: no page open; C{--tabs} tabs of one browser on
    the page (they share one event stream); C{--tabs} separate browsers
    (one stream each); each page with its 5 s status refresh and the
    sparkline reads of its cards on screen; each quiet and while one
    backend is SIGKILLed every second (four events per crash, streamed to
    every page, each of which then reads that process's status).

Chromium runs on the same cores as the orchestrator (Debian's, fetched
into C{.cache/} by C{.ci/fetch-chromium}, see C{tests/browser.py}).

C{--screenshot PATH} instead takes the README's picture: a few processes
(healthy, probe-less, crash-looping until it gives up) in a 1280x900
window.

Usage: python bench/ui.py [--many 100] [--tabs 10] [--window 20] [--interval 5]
       python bench/ui.py --screenshot docs/status-page.png
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import (DEMO, PYTHON, TINY, CPUMeter, SystemCPU, freePort, log,  # noqa: E402
                     machineInfo, startOrchestrator, stopAll, summary, table, waitFor, writeResult)

from tests import browser  # noqa: E402


def _yaml(adminPort: int, programs, extra: str = "") -> str:
    lines = ["admin:", f'  listen: "tcp:{adminPort}:interface=127.0.0.1"', "processes:"]
    for name, argv, body in programs:
        lines.append(f"  {name}:")
        lines.append(f"    command: {json.dumps([str(a) for a in argv])}")
        lines.extend("    " + line for line in body.strip("\n").splitlines())
    return "\n".join(lines) + "\n" + extra


def _tiny(count: int, interval: float):
    programs = []
    for i in range(count):
        port = freePort()
        programs.append((f"svc{i:03d}", [PYTHON, TINY, port],
                         f'url: "http://127.0.0.1:{port}"\n'
                         f"restart: {{delay: 0.1, max_attempts: 1000}}\n"
                         f"health: {{interval: {interval}, timeout: 2, start_timeout: 30}}"))
    return programs


def _processes(adminPort: int) -> list[dict]:
    from tests.harness import getJSON

    return getJSON(f"http://127.0.0.1:{adminPort}/api/v1/processes", timeout=10)[1]["processes"]


def _allRunning(adminPort: int, count: int) -> bool:
    try:
        found = _processes(adminPort)
    except (OSError, ValueError):
        return False
    return len(found) == count and all(p["status"] == "running" for p in found)


# -- 1. weight ------------------------------------------------------------------------------

def pageWeight() -> dict:
    from orchestrator.web.ui import loadAssets

    assets = loadAssets()
    files = {name: {"bytes": len(a.body), "gzip": len(gzip.compress(a.body, 9))}
             for name, a in sorted(assets.items())}
    return {"files": files, "total": sum(f["bytes"] for f in files.values()),
            "total_gzip": sum(f["gzip"] for f in files.values())}


# -- 2. first render -------------------------------------------------------------------------

_TIMING = """
const paint = performance.getEntriesByName('first-contentful-paint')[0];
const mark = performance.getEntriesByName('orchestrator:first-status')[0];
return mark ? [paint ? paint.startTime : null, mark.startTime,
               performance.getEntriesByType('resource').length] : null;
"""


def firstRender(url: str, profile: str, reloads: int) -> dict:
    driver = browser.newBrowser(profile)
    try:
        samples = []
        for i in range(reloads + 1):
            driver.get(url)
            fcp, status, resources = browser.waitUntil(lambda: driver.execute_script(_TIMING), 60,
                                                       "the first status render")
            samples.append({"cold": i == 0, "fcp_ms": fcp, "status_ms": status, "resources": resources})
        return {"cold": samples[0], "warm_fcp": summary([s["fcp_ms"] for s in samples[1:]]),
                "warm_status": summary([s["status_ms"] for s in samples[1:]])}
    finally:
        driver.quit()


# -- 3. CPU with windows open --------------------------------------------------------------------

class Crasher:
    """
    SIGKILL one backend (round robin) every second, by the pid its status shows.
    """

    def __init__(self, adminPort: int) -> None:
        self.adminPort = adminPort
        self.index = 0
        self.kills = 0

    def tick(self) -> None:
        processes = _processes(self.adminPort)
        for _ in range(len(processes)):
            target = processes[self.index % len(processes)]
            self.index += 1
            if target["pid"] and target["status"] == "running":
                try:
                    os.kill(target["pid"], signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass
                return


def measure(pid: int, seconds: float, crasher: Crasher | None = None) -> dict:
    cpu, system = CPUMeter(pid).start(), SystemCPU().start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if crasher is not None:
            crasher.tick()
        time.sleep(max(0.0, min(1.0, end - time.monotonic())))
    return {"cpu_pct": round(cpu.stop(), 1), "system_pct": round(system.stop(), 1),
            "kills": crasher.kills if crasher else 0}


def _openPages(work: str, url: str, many: int, tabs: int, separate: bool) -> list:
    """
    C{tabs} pages showing C{many} cards: tabs of one browser (which share
    one event stream), or each in its own browser (one stream each).
    """
    drivers = []
    for i in range(tabs):
        if separate or not drivers:
            driver = browser.newBrowser(os.path.join(work, f"profile-cpu-{separate}-{i}"))
            driver.set_page_load_timeout(180)
            drivers.append(driver)
        else:
            driver = drivers[0]
            driver.switch_to.new_window("tab")
        driver.get(url)
        browser.waitUntil(lambda: driver.execute_script(
            "return document.querySelectorAll('.card').length") == many, 120, "the cards")
    return drivers


def _pagesState(drivers) -> dict:
    states, streams, crashed, severe = [], [], [], []
    for driver in drivers:
        for handle in driver.window_handles:
            driver.switch_to.window(handle)
            states.append(driver.execute_script("return document.visibilityState"))
            streams.append(driver.execute_script("return document.getElementById('stream').textContent"))
            crashed.append(driver.execute_script(
                "return [...document.querySelectorAll('#events tbody td:nth-child(4)')]"
                ".filter(c => c.textContent === 'crashed').length"))
        severe += [e["message"] for e in browser.browserLog(driver) if e["level"] == "SEVERE"]
    return {"visibility": sorted(set(states)), "streams": sorted(set(streams)),
            "crashed_rows_min": min(crashed), "console_errors": severe[:5]}


def cpuWithWindows(work: str, many: int, tabs: int, window: float, interval: float) -> dict:
    adminPort = freePort()
    programs = _tiny(many, interval)
    process = startOrchestrator(os.path.join(work, "cpu"), _yaml(adminPort, programs), adminPort, 60)
    waitFor(lambda: _allRunning(adminPort, many), 120, 0.5, f"{many} backends running")
    url = f"http://127.0.0.1:{adminPort}/"
    results, pages = {}, {}
    time.sleep(interval)  # every probe scheduled
    log(f"CPU: no page, {window:.0f}s")
    results["no page, quiet"] = measure(process.pid, window)
    log(f"CPU: no page, 1 crash/s, {window:.0f}s")
    results["no page, 1 crash/s"] = measure(process.pid, window, Crasher(adminPort))
    for separate, label in ((False, f"{tabs} tabs of one browser"), (True, f"{tabs} browsers")):
        waitFor(lambda: _allRunning(adminPort, many), 60, 0.5, "all running again")
        log(f"opening {label}")
        drivers = _openPages(work, url, many, tabs, separate)
        try:
            time.sleep(interval)
            log(f"CPU: {label}, {window:.0f}s")
            results[f"{label}, quiet"] = measure(process.pid, window)
            log(f"CPU: {label}, 1 crash/s, {window:.0f}s")
            results[f"{label}, 1 crash/s"] = measure(process.pid, window, Crasher(adminPort))
            pages[label] = _pagesState(drivers)
        finally:
            for driver in drivers:
                driver.quit()
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    return {"results": results, "pages": pages}


# -- the README's screenshot ---------------------------------------------------------------------

def screenshot(work: str, path: str) -> None:
    adminPort, backendPort, tinyPort = freePort(), freePort(), freePort()
    programs = [
        ("backend", [PYTHON, DEMO, "--port", backendPort],
         f'url: "http://127.0.0.1:{backendPort}"\nhealth: {{interval: 1, timeout: 2}}'),
        ("worker", [PYTHON, TINY, tinyPort],
         f'url: "http://127.0.0.1:{tinyPort}"\nhealth: {{interval: 1, timeout: 2}}'),
        ("flaky", [PYTHON, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"],
         "start: {ready_after: 0.2}\nhealth: {probe: none}\nrestart: {delay: 0.5, max_attempts: 2}"),
    ]
    process = startOrchestrator(os.path.join(work, "shot"), _yaml(adminPort, programs), adminPort, 60)
    driver = browser.newBrowser(os.path.join(work, "profile-shot"), 1280, 900)
    try:
        driver.get(f"http://127.0.0.1:{adminPort}/")
        browser.waitUntil(lambda: driver.execute_script(
            "return document.querySelector(\".card[data-name='flaky'].gave-up\") !== null && "
            "document.querySelectorAll('.card.s-running').length === 2"), 60, "the scene")
        time.sleep(4)  # a few probe results in the sparklines
        driver.save_screenshot(path)
    finally:
        driver.quit()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    log(f"wrote {path} ({os.path.getsize(path)} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--many", type=int, default=100)
    parser.add_argument("--tabs", type=int, default=10)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--screenshot", metavar="PATH")
    args = parser.parse_args()
    browser.ensureChromium()
    work = tempfile.mkdtemp(prefix="bench-ui-")
    try:
        if args.screenshot:
            screenshot(work, os.path.abspath(args.screenshot))
            return
        data = {"machine": machineInfo(), "args": vars(args), "weight": pageWeight()}
        renders = {}
        for count in (1, args.many):
            adminPort = freePort()
            process = startOrchestrator(os.path.join(work, f"render-{count}"),
                                        _yaml(adminPort, _tiny(count, args.interval)), adminPort, 60)
            waitFor(lambda: _allRunning(adminPort, count), 120, 0.5, f"{count} running")
            log(f"first render, {count} process(es)")
            renders[count] = firstRender(f"http://127.0.0.1:{adminPort}/",
                                         os.path.join(work, f"profile-render-{count}"), args.reloads)
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        data["render"] = renders
        data["cpu"] = cpuWithWindows(work, args.many, args.tabs, args.window, args.interval)
        writeResult("ui", data)
        weight = data["weight"]
        print(table(["file", "bytes", "gzip -9"],
                    [[n, f["bytes"], f["gzip"]] for n, f in weight["files"].items()]
                    + [["**total**", weight["total"], weight["total_gzip"]]]))
        print()
        print(table(["processes", "cold FCP", "cold statuses shown", "warm FCP (median)",
                     "warm statuses shown (median)"],
                    [[count, f"{r['cold']['fcp_ms']:.0f} ms", f"{r['cold']['status_ms']:.0f} ms",
                      f"{r['warm_fcp']['median']:.0f} ms", f"{r['warm_status']['median']:.0f} ms"]
                     for count, r in renders.items()]))
        print()
        cpu = data["cpu"]
        print(table(["condition", "orchestrator CPU", "machine busy", "SIGKILLs"],
                    [[k, f"{v['cpu_pct']}%", f"{v['system_pct']}%", v["kills"]]
                     for k, v in cpu["results"].items()]))
        for label, state in cpu["pages"].items():
            print(f"\n{label}: visibility {state['visibility']}, stream {state['streams']}, "
                  f"fewest 'crashed' rows in a page's table {state['crashed_rows_min']}, "
                  f"console errors: {state['console_errors'] or 'none'}")
    finally:
        stopAll()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
