"""
The status page in a real headless Chromium against a real C{twistd -n
orchestrator} supervising the demo backend on 127.0.0.1: live status, a
crash seen without a reload, restart from the page (by keyboard), logs,
events, the token prompt, monitor-only mode, a dropped stream that
reconnects and replays what it missed (Last-Event-ID), many tabs sharing
one stream, no console errors; screenshots (desktop, 360 px, dark) are
saved under the test's temp folder.

Chromium comes from Debian's packages, fetched into C{.cache/} (see
L{tests.browser}); the tests skip, saying why, where that is impossible.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests import browser
from tests.harness import http, waitFor

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "browser-test-token"

CONFIG = """
{orchestrator}
admin:
  listen: "tcp:{admin_port}:interface=127.0.0.1"
  token: {token}
processes:
  backend:
    command: ["{python}", "{demo}", "--port", "{backend_port}"]
    url: "http://127.0.0.1:{backend_port}"
    stop: {timeout: 5}
    restart: {delay: 0.2}
    health: {interval: 0.5, timeout: 2, start_timeout: 20}
"""


def _config(token: str | None = None, enabled: bool = True) -> str:
    return (CONFIG.replace("{token}", f'"{token}"' if token else "null")
            .replace("{orchestrator}", "" if enabled else "orchestrator: {enabled: false}"))


@pytest.fixture
def chrome(tmp_path):
    """
    Open headless Chromium windows (each with a fresh profile under the
    test's temp folder); all are quit at teardown.
    """
    opened = []

    def open_(width: int = 1280, height: int = 900):
        try:
            driver = browser.newBrowser(str(tmp_path / f"profile-{len(opened)}"), width, height)
        except browser.Unavailable as e:
            pytest.skip(str(e))
        opened.append(driver)
        return driver

    yield open_
    for driver in opened:
        driver.quit()


def card(driver, field: str, name: str = "backend") -> str:
    """
    The text of one field of a process's card (C{status}, C{pid}, C{exit}...).
    """
    return driver.execute_script(
        "const n = document.querySelector(`.card[data-name='${arguments[0]}'] .${arguments[1]}`);"
        "return n ? n.textContent : null;", name, field)


def text(driver, selector: str) -> str:
    return driver.execute_script(
        "const n = document.querySelector(arguments[0]); return n ? n.textContent : null;", selector)


def streamClients(orch) -> int:
    """
    The orchestrator's C{orchestrator_admin_stream_clients} gauge (event
    and log stream clients now), read from its C{/metrics}.
    """
    status, _, body = http("GET", orch.url + "/metrics")
    assert status == 200, status
    for line in body.decode().splitlines():
        if line.startswith("orchestrator_admin_stream_clients "):
            return int(float(line.split()[1]))
    raise AssertionError("no orchestrator_admin_stream_clients in /metrics")


def screenshot(driver, path) -> None:
    driver.save_screenshot(str(path))
    assert os.path.getsize(path) > 1000, f"{path} is (nearly) empty"


def severe(entries, allowed=()) -> list[str]:
    """
    The console errors, but those containing one of C{allowed}.
    """
    return [e["message"] for e in entries
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def test_live_status_crash_restart_logs(run_orchestrator, chrome, tmp_path):
    """The page shows the backend running, a kill -9 and its new pid without a reload, a keyboard restart completing, logs, events; 360 px and dark mode; no console error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    orch = run_orchestrator(_config())
    pid = orch.waitHealthy(30)
    driver = chrome()
    driver.get(orch.url + "/")
    browser.waitUntil(lambda: card(driver, "status") == "running" and card(driver, "pid") == str(pid),
                      30, "the page to show the backend running with its pid")
    driver.execute_script("window.notReloaded = true;")
    from orchestrator import __version__
    assert text(driver, "#version") == __version__
    assert text(driver, "#mode") == "managing"
    browser.waitUntil(lambda: text(driver, "#stream").startswith("live"), 15, "the stream to be live")
    browser.waitUntil(lambda: driver.execute_script(
        "return document.querySelectorAll(\".card[data-name='backend'] .spark polyline\").length"),
        20, "the latency sparkline")
    assert "healthy · " in card(driver, "health") and " ms · " in card(driver, "health")
    screenshot(driver, tmp_path / "desktop.png")

    # A crash: seen without reloading, with the cause, then the new pid.
    os.kill(pid, signal.SIGKILL)
    browser.waitUntil(lambda: "killed by signal 9" in (card(driver, "exit") or ""), 10,
                      "the page to show the crash")
    assert "cause: exit" in card(driver, "exit") and f"pid {pid}" in card(driver, "exit")
    newPid = waitFor(lambda: (lambda p: p if p and p != pid else None)(orch.backendPid()), 30,
                     what="the backend to be respawned")
    browser.waitUntil(lambda: card(driver, "pid") == str(newPid) and card(driver, "status") == "running",
                      30, "the page to show the new pid")
    assert driver.execute_script("return window.notReloaded === true")
    assert "backend: running → crashed" in text(driver, "#announce")  # aria-live
    browser.waitUntil(lambda: "crashed" in text(driver, "#events tbody"), 10, "the crash in the events")
    assert card(driver, "restarts") == "1"

    # Restart from the page, by keyboard: pending (disabled), then done.
    button = driver.find_element(By.CSS_SELECTOR, ".card[data-name='backend'] button[data-verb='restart']")
    button.send_keys(Keys.ENTER)
    browser.waitUntil(lambda: not button.is_enabled(), 10, "the buttons to be disabled while pending")
    assert "restart pending" in card(driver, "note")
    browser.waitUntil(lambda: "restarted successfully" in card(driver, "note"), 60, "the restart to complete")
    assert button.is_enabled()
    restarted = orch.backendPid()
    assert restarted not in (None, pid, newPid)
    browser.waitUntil(lambda: card(driver, "pid") == str(restarted), 10, "the restarted pid")
    assert card(driver, "restarts") == "2"

    # Events filtered by type, then by process.
    driver.find_element(By.CSS_SELECTOR, "#filter-type option[value='restarted']").click()
    browser.waitUntil(lambda: driver.execute_script(
        "return [...document.querySelectorAll('#events tbody tr td:nth-child(4)')].map(c => c.textContent)")
        == ["restarted"], 10, "only the restarted event")
    driver.find_element(By.CSS_SELECTOR, "#filter-type option[value='']").click()

    # Logs: the recent lines, then new ones through the log stream (the
    # server counts it: one more stream client while the view is open,
    # released when it closes or is reopened), not by polling.
    assert streamClients(orch) == 1  # the page's event stream
    logsButton = driver.find_element(By.CSS_SELECTOR, ".card[data-name='backend'] .logs-button")
    logsButton.click()
    browser.waitUntil(lambda: f"(pid {restarted})" in text(driver, "#logs-text"), 20, "the backend's log lines")
    browser.waitUntil(lambda: streamClients(orch) == 2, 20, "the log stream to connect")
    browser.waitUntil(lambda: text(driver, "#logs-state").startswith("Following new lines live"), 10,
                      "the page to say it follows live")
    os.kill(restarted, signal.SIGUSR1)
    browser.waitUntil(lambda: f"received SIGUSR1 (pid {restarted})" in text(driver, "#logs-text"), 20,
                      "the new line, from the stream")
    assert text(driver, "#logs-state").startswith("Following new lines live")
    logsButton.click()  # reopened: the old stream is closed, not leaked
    browser.waitUntil(lambda: f"received SIGUSR1 (pid {restarted})" in text(driver, "#logs-text"), 20,
                      "the line again, after reopening")
    browser.waitUntil(lambda: text(driver, "#logs-state").startswith("Following new lines live"), 10,
                      "the reopened view to follow live")
    waitFor(lambda: streamClients(orch) == 2, 10, what="one log stream after reopening")
    driver.find_element(By.ID, "logs-close").click()
    browser.waitUntil(lambda: streamClients(orch) == 1, 20, "the log stream to be released on close")

    # Phone width: nothing overflows sideways; dark mode: a dark background.
    driver.set_window_size(360, 800)
    browser.waitUntil(lambda: driver.execute_script("return window.innerWidth") <= 360, 5, "a 360 px window")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 360
    screenshot(driver, tmp_path / "phone.png")
    driver.set_window_size(1280, 900)
    browser.darkMode(driver)
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 22)", background
    screenshot(driver, tmp_path / "dark.png")

    assert severe(browser.browserLog(driver)) == []

    # The orchestrator goes away and comes back: the page says so, and resumes.
    port = orch.adminPort
    orch.stop()
    browser.waitUntil(lambda: "reconnecting" in text(driver, "#stream"), 20, "the page to say it reconnects")
    again = run_orchestrator(_config(), adminPort=port, backendPort=orch.backendPort)
    browser.waitUntil(lambda: "reconnected" in text(driver, "#stream"), 30, "the page to say it reconnected")
    thirdPid = again.waitHealthy(30)
    browser.waitUntil(lambda: card(driver, "pid") == str(thirdPid), 30, "the new orchestrator's backend")
    # Only the network errors of the drop: the cut stream, the refused reconnects.
    assert severe(browser.browserLog(driver), allowed=(
        "net::ERR_CONNECTION_REFUSED", "events/stream - Failed to load resource: net::ERR_INCOMPLETE_CHUNKED_ENCODING")) == []


def test_token_prompt(run_orchestrator, chrome, tmp_path):
    """With a token the page asks for it once; a wrong one shows the API's error; the right one works and stays out of URLs and cookies."""
    from selenium.webdriver.common.by import By

    orch = run_orchestrator(_config(token=TOKEN))
    pid = orch.waitHealthy(30)
    driver = chrome()
    driver.get(orch.url + "/ui/")
    dialog = driver.find_element(By.ID, "login")
    browser.waitUntil(lambda: dialog.get_attribute("open") is not None, 20, "the token prompt")
    assert "missing token" in text(driver, "#login-error")
    field = driver.find_element(By.ID, "login-token")
    field.send_keys("wrong-token")
    driver.find_element(By.ID, "login-submit").click()
    browser.waitUntil(lambda: text(driver, "#login-error") == "invalid token", 20, "the API's 'invalid token'")
    assert dialog.get_attribute("open") is not None
    field.send_keys(TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    browser.waitUntil(lambda: card(driver, "pid") == str(pid) and card(driver, "status") == "running",
                      30, "the page to work with the token")
    browser.waitUntil(lambda: text(driver, "#stream").startswith("live"), 15, "the stream, with the token")
    assert dialog.get_attribute("open") is None
    assert driver.execute_script("return sessionStorage.getItem('orchestrator.token')") == TOKEN
    assert driver.get_cookies() == [] and TOKEN not in driver.current_url
    screenshot(driver, tmp_path / "token.png")
    # The only errors: the refused requests before the token was entered.
    assert severe(browser.browserLog(driver), allowed=("status of 401",)) == []


def test_monitor_only_disables_actions(run_orchestrator, chrome):
    """In monitor-only mode every action button is disabled and the page says why."""
    from selenium.webdriver.common.by import By

    orch = run_orchestrator(_config(enabled=False))
    driver = chrome()
    driver.get(orch.url + "/")
    browser.waitUntil(lambda: text(driver, "#mode") == "monitor-only", 20, "monitor-only mode shown")
    browser.waitUntil(lambda: card(driver, "status"), 20, "the backend's card")
    buttons = driver.find_elements(By.CSS_SELECTOR, ".card button[data-verb]")
    assert len(buttons) == 3 and not any(b.is_enabled() for b in buttons)
    assert "monitor-only" in card(driver, "note")
    assert not driver.find_element(By.ID, "mode-reason").get_attribute("hidden")
    assert severe(browser.browserLog(driver)) == []


def test_many_tabs_share_one_stream(run_orchestrator, chrome):
    """Eight tabs in one browser all load and update live (they share one stream: a browser gives a host 6 connections); closing the tab that reads it hands the stream to another."""
    from selenium.webdriver.common.by import By  # noqa: F401

    orch = run_orchestrator(_config())
    pid = orch.waitHealthy(30)
    driver = chrome()
    handles = []
    for i in range(8):
        if i:
            driver.switch_to.new_window("tab")
        driver.get(orch.url + "/")
        browser.waitUntil(lambda: card(driver, "pid") == str(pid), 30, f"tab {i} showing the backend")
        handles.append(driver.current_window_handle)
    browser.waitUntil(lambda: "shared with another tab" in text(driver, "#stream"), 15,
                      "the last tab to follow the shared stream")

    os.kill(pid, signal.SIGKILL)
    browser.waitUntil(lambda: "killed by signal 9" in (card(driver, "exit") or ""), 15,
                      "the crash in the last tab")

    # The first tab reads the stream; close it: another tab takes over.
    newPid = waitFor(lambda: (lambda p: p if p and p != pid else None)(orch.backendPid()), 30,
                     what="the backend to be respawned")
    driver.switch_to.window(handles[0])
    driver.close()
    driver.switch_to.window(handles[-1])

    def someTabLeads():
        for handle in handles[1:]:
            driver.switch_to.window(handle)
            if text(driver, "#stream") == "live":
                return handle
        return None

    browser.waitUntil(someTabLeads, 20, "another tab to read the stream")
    driver.switch_to.window(handles[-1])
    browser.waitUntil(lambda: card(driver, "pid") == str(newPid), 20, "the respawned pid")
    os.kill(newPid, signal.SIGKILL)
    browser.waitUntil(lambda: f"(pid {newPid}" in (card(driver, "exit") or ""), 15,
                      "the second crash, through the new reader")
    assert severe(browser.browserLog(driver)) == []


def test_dropped_stream_resumes_with_last_event_id(run_orchestrator, chrome):
    """Events that happen while the stream is down reach the page when it reconnects (Last-Event-ID replay), and the page says so."""
    orch = run_orchestrator(_config().replace("  token: null", "  token: null\n  stream_max_seconds: 3s"))
    pid = orch.waitHealthy(30)
    driver = chrome()
    driver.get(orch.url + "/")
    browser.waitUntil(lambda: card(driver, "pid") == str(pid), 30, "the backend's pid")
    # The stream's lifetime ends it after 3 s; the page waits 2 s (retry) to reconnect.
    browser.waitUntil(lambda: "reconnecting in 2 s with Last-Event-ID" in text(driver, "#stream"), 20,
                      "the page to say the stream dropped")
    os.kill(pid, signal.SIGKILL)
    waitFor(lambda: orch.status()["restart_count"] >= 1 or orch.status()["status"] != "running", 5,
            what="the orchestrator to see the crash")
    assert "reconnecting" in text(driver, "#stream"), "the crash came while the page's stream was down"
    browser.waitUntil(lambda: "resumed after event #" in text(driver, "#stream"), 20,
                      "the page to say it resumed")
    browser.waitUntil(lambda: "killed by signal 9" in text(driver, "#events tbody"), 10,
                      "the crash, replayed into the events list")
    assert severe(browser.browserLog(driver)) == []


def test_log_view_polls_when_the_stream_cap_is_reached(run_orchestrator, chrome):
    """With admin.max_stream_clients taken by the event stream the log view gets a 503, says so, and polls logs?lines= instead."""
    from selenium.webdriver.common.by import By

    orch = run_orchestrator(_config().replace("  token: null", "  token: null\n  max_stream_clients: 1"))
    pid = orch.waitHealthy(30)
    driver = chrome()
    driver.get(orch.url + "/")
    browser.waitUntil(lambda: text(driver, "#stream") == "live", 20, "the event stream, the only one allowed")
    driver.find_element(By.CSS_SELECTOR, ".card[data-name='backend'] .logs-button").click()
    browser.waitUntil(lambda: text(driver, "#logs-state").startswith("Polling:"), 20, "the polling note")
    assert "too many stream clients" in text(driver, "#logs-state")
    assert "warn" in driver.find_element(By.ID, "logs-state").get_attribute("class")
    os.kill(pid, signal.SIGUSR1)
    browser.waitUntil(lambda: f"received SIGUSR1 (pid {pid})" in text(driver, "#logs-text"), 20,
                      "the new line, by polling")
    assert streamClients(orch) == 1
    # The refused stream request is the one expected error.
    assert severe(browser.browserLog(driver), allowed=("logs/stream - Failed to load resource: the server "
                                                       "responded with a status of 503",)) == []
