"""
A real headless Chromium for the status page's tests and bench, driven
with selenium.

Debian's C{chromium} and C{chromium-driver} are fetched without
installing anything system-wide by C{.ci/fetch-chromium} (C{apt-get
download} + C{dpkg -x} into the gitignored C{.cache/chromium/}) and run
with C{LD_LIBRARY_PATH} pointing into that tree.  Where that is
impossible (no apt, no network, no selenium) the tests skip and say why.
"""

from __future__ import annotations

import glob
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREE = os.path.join(ROOT, ".cache", "chromium", "root")
CHROMIUM = os.path.join(TREE, "usr", "lib", "chromium", "chromium")
CHROMEDRIVER = os.path.join(TREE, "usr", "lib", "chromium", "chromedriver")

#: The flags every test browser runs with: nothing phones home, nothing
#: is kept between runs (the profile is a fresh folder per browser).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars")


class Unavailable(Exception):
    """
    No browser can be had here; the message says why.
    """


def libraryPath() -> str:
    """
    The C{LD_LIBRARY_PATH} for the extracted tree: its library folders
    first, then whatever the environment had.
    """
    folders = [os.path.join(TREE, "usr", "lib", "chromium")]
    for pattern in ("usr/lib/*-linux-gnu", "lib/*-linux-gnu", "usr/lib/*-linux-gnu/pulseaudio"):
        folders.extend(sorted(glob.glob(os.path.join(TREE, pattern))))
    existing = os.environ.get("LD_LIBRARY_PATH")
    return os.pathsep.join(folders + ([existing] if existing else []))


def ensureChromium() -> None:
    """
    Fetch Chromium and its driver once (a few minutes the first time);
    print the fetch script's one line saying what was fetched.

    @raise Unavailable: with the reason, where that is impossible.
    """
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise Unavailable("selenium is not installed (pip install -e '.[test]')")
    if os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK):
        return
    script = os.path.join(ROOT, ".ci", "fetch-chromium")
    try:
        done = subprocess.run([script], capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f".ci/fetch-chromium could not run: {e}")
    if done.stdout.strip():
        print(done.stdout.strip())
    if done.returncode != 0 or not os.access(CHROMIUM, os.X_OK):
        raise Unavailable("Debian's chromium could not be fetched: "
                          + (done.stderr.strip() or f"exit code {done.returncode}"))


def newBrowser(profile: str, width: int = 1280, height: int = 900):
    """
    A headless Chromium with a fresh profile in C{profile}, its console
    log collected (C{browserLog}).

    @raise Unavailable: Chromium cannot be fetched or does not start.
    """
    ensureChromium()
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    os.makedirs(profile, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = dict(os.environ, LD_LIBRARY_PATH=libraryPath(), SE_OFFLINE="true")
    service = Service(executable_path=CHROMEDRIVER, env=env,
                      log_output=os.path.join(profile, "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as e:
        raise Unavailable(f"headless chromium does not start here: {e.msg}")
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    return driver


def darkMode(driver, dark: bool = True) -> None:
    """
    Emulate C{prefers-color-scheme: dark} (or light), over the DevTools protocol.
    """
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})


def browserLog(driver) -> list[dict]:
    """
    The console messages since the last call (each with C{level}, C{message}).
    """
    return driver.get_log("browser")


def waitUntil(predicate, timeout: float = 30.0, what: str = "condition", interval: float = 0.1):
    """
    Poll C{predicate} (which may raise while the page is changing) until
    it returns a true value, or fail naming C{what}.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # a stale element while the page re-renders
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)
