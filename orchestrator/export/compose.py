"""
C{orchestrator export compose}: one compose service per process.

Health checks run inside the container without curl or wget: an exec
probe as it is, http and tcp probes as a short C{python3 -c} program
(the image needs python3; the README says so).  Values from C{.env} and
secret-looking variables are written as C{${NAME}} interpolations, which
compose fills from its own C{.env} file or the shell, unless
C{--inline-secrets}.
"""

from __future__ import annotations

from typing import Any

from orchestrator.config.types import Config
from orchestrator.export.common import (
    Coverage,
    Export,
    NotExported,
    ProcessView,
    commentLines,
    dumpYAML,
    goDuration,
    parseBytes,
    processViews,
    readProbe,
)
from orchestrator.export.kubernetes import DEFAULT_IMAGE

__all__ = ["exportCompose", "RLIMIT_NAMES"]

#: Orchestrator rlimit names; compose's ulimits use the same ones.
RLIMIT_NAMES = ("nofile", "nproc", "core", "memlock", "as", "fsize", "cpu", "stack")

_CONDITIONS = {
    "started": "service_started",
    "healthy": "service_healthy",
    "completed_successfully": "service_completed_successfully",
}

_HTTP_CHECK = (
    "import sys,urllib.request as u;"
    "r=u.urlopen(u.Request({url!r},headers={headers!r}),timeout={timeout});"
    "sys.exit(0 if 200<=r.status<400 else 1)"
)
_TCP_CHECK = "import socket;socket.create_connection(({host!r},{port}),{timeout}).close()"


def _literal(text: str) -> str:
    """
    Compose interpolates C{$VAR} and C{${VAR}} in every value; the
    orchestrator passes values as written, so C{$} is escaped as C{$$}.
    """
    return text.replace("$", "$$")


def _test(view: ProcessView, coverage: Coverage) -> list[str] | None:
    probe = readProbe(view, coverage, "a compose healthcheck")
    timeout = view.proc.health.timeout
    if probe is None:
        return None
    if probe.kind == "exec":
        return ["CMD-SHELL", probe.shell] if probe.shell is not None else ["CMD", *probe.argv]
    if probe.kind == "http":
        code = _HTTP_CHECK.format(url=probe.url, headers=dict(probe.headers), timeout=timeout)
    else:
        code = _TCP_CHECK.format(host=probe.host or "127.0.0.1", port=probe.port, timeout=timeout)
    return ["CMD", "python3", "-c", code]


def _healthcheck(view: ProcessView, coverage: Coverage) -> dict | None:
    test = _test(view, coverage)
    if test is None:
        return None
    health = view.proc.health
    hp = view.path + ("health",)
    check: dict[str, Any] = {
        "test": test,
        "interval": goDuration(health.interval),
        "timeout": goDuration(health.timeout),
        "retries": health.failure_threshold,
        "start_period": goDuration(health.start_period),
        "start_interval": goDuration(health.start_interval),
    }
    coverage.used(hp + ("interval",), hp + ("timeout",), hp + ("failure_threshold",),
                  hp + ("start_period",), hp + ("start_interval",), hp + ("history",))
    if health.success_threshold != 1:
        coverage.skip(hp + ("success_threshold",), "one passing check makes a container healthy")
    if health.start_timeout:
        coverage.skip(hp + ("start_timeout",), "compose never fails a container for starting slowly")
    else:
        coverage.used(hp + ("start_timeout",))
    if health.restart_on_unhealthy:
        coverage.skip(hp + ("restart_on_unhealthy",), "compose marks the container unhealthy but does "
                      "not restart it", True)
    else:
        coverage.used(hp + ("restart_on_unhealthy",))
    return check


def _restart(view: ProcessView, coverage: Coverage) -> str:
    r = view.path + ("restart",)
    restart = view.proc.restart
    coverage.used(r + ("policy",), r + ("auto",), r + ("backoff",))
    setByOperator = coverage.setByOperator(r + ("max_attempts",))
    if not restart.auto or restart.policy == "never":
        coverage.used(r + ("max_attempts",))
        return "no"
    if restart.policy == "on-failure":
        coverage.used(r + ("max_attempts",))
        return f"on-failure:{restart.max_attempts}"
    if restart.policy not in ("always", "backoff"):
        coverage.skip(r + ("policy",), "custom restart policy: exported as restart: always")
    if setByOperator:
        coverage.skip(r + ("max_attempts",), "restart: always never gives up (on-failure:N would "
                      "not restart after a clean exit)")
    else:
        coverage.used(r + ("max_attempts",))
    if restart.policy == "backoff" and coverage.anySetByOperator(r + ("backoff",)):
        coverage.skip(r + ("backoff",), "the container engine applies its own restart delay",
                      dict(restart.options.get("backoff", {})))
    return "always"


def _ulimits(view: ProcessView, coverage: Coverage) -> dict:
    limits = view.option("rlimits")
    if not limits:
        return {}
    out = {}
    for name, value in limits.items():
        path = view.path + ("rlimits", name)
        if name not in RLIMIT_NAMES:
            coverage.skip(path, "not a compose ulimit")
            continue
        if isinstance(value, dict):
            soft, hard = value.get("soft"), value.get("hard")
            out[name] = {"soft": -1 if soft == "unlimited" else soft, "hard": -1 if hard == "unlimited" else hard}
        else:
            out[name] = -1 if value == "unlimited" else value
        coverage.used(path)
    return {"ulimits": out} if out else {}


def _service(view: ProcessView, config: Config, image: str, inlineSecrets: bool,
             coverage: Coverage, views: dict[str, ProcessView]) -> dict:
    p = view.path
    service: dict[str, Any] = {"image": image}
    if view.command:
        service["command"] = [_literal(arg) for arg in view.command]
    else:
        coverage.skip(p + ("command",), "no command (monitor-only): the image's entrypoint runs", [])
    coverage.used(p + ("command",))
    if view.workingDir:
        service["working_dir"] = _literal(view.workingDir)
    coverage.used(p + ("working_dir",))
    environment = {}
    for name, value, secret in view.environment(config.dotenv):
        environment[name] = _literal(value) if (inlineSecrets or not secret) else "${" + name + "}"
    if environment:
        service["environment"] = environment
    coverage.used(p + ("env",), p + ("env_from_dotenv",))
    if view.proc.inherit_env:
        coverage.used(p + ("inherit_env",))
    else:
        coverage.skip(p + ("inherit_env",), "a container always starts with its image's environment")
    user, group = view.option("user"), view.option("group")
    if user is not None or group is not None:
        service["user"] = _literal(f"{user if user is not None else ''}{':' + str(group) if group is not None else ''}")
        coverage.used(p + ("user",), p + ("group",))
    check = _healthcheck(view, coverage)
    if check is not None:
        service["healthcheck"] = {**check, "test": [_literal(word) for word in check["test"]]}
    service["restart"] = _restart(view, coverage)
    depends = {}
    for name, condition in view.dependencies.items():
        if condition == "running":
            dep = views.get(name)
            probed = dep is not None and dep.proc.health.probe in ("http", "tcp", "exec")
            condition = "healthy" if probed else "started"
        if condition in _CONDITIONS:
            depends[name] = {"condition": _CONDITIONS[condition]}
        else:
            coverage.skip(p + ("depends_on", name), f"unknown condition {condition!r}", condition)
    if depends:
        service["depends_on"] = depends
    coverage.used(p + ("depends_on",))
    service["stop_signal"] = "SIG" + view.proc.stop.signal
    service["stop_grace_period"] = goDuration(view.proc.stop.timeout)
    coverage.used(p + ("stop",))
    port = view.port
    if port is not None:
        service["expose"] = [str(port)]
        coverage.used(p + ("port",), p + ("url",))
    if view.replicas != 1:
        service["deploy"] = {"replicas": view.replicas}
    coverage.used(p + ("replicas",))
    size = parseBytes(view.option("max_memory"))
    if size is not None:
        service["mem_limit"] = size
        coverage.used(p + ("max_memory",), p + ("memory_check_interval",))
    service.update(_ulimits(view, coverage))
    if view.option("umask") is not None:
        coverage.skip(p + ("umask",), "compose has no umask setting: set it in the image's entrypoint")
    if not view.proc.autostart:
        service["profiles"] = ["manual"]
    coverage.used(p + ("autostart",))
    for text in [*view.command, *environment.values()]:
        if "{replica}" in text or "{port}" in text:
            coverage.skip(p + ("replicas",), "compose replicas share one command and environment: "
                          "{replica} and {port} are passed as written", view.replicas)
            break
    return service


def exportCompose(config: Config, image: str | None = None, inlineSecrets: bool = False) -> Export:
    """
    Render a configuration as a compose file.

    @param image: the image of every service (default L{DEFAULT_IMAGE}).
    @param inlineSecrets: write secret values instead of C{${NAME}}.
    """
    coverage = Coverage(config, "compose")
    views = {v.name: v for v in processViews(config)}
    result = Export()
    top = coverage.orchestratorReport()
    services = {}
    notes = {}
    for view in views.values():
        services[view.name] = _service(view, config, image or DEFAULT_IMAGE, inlineSecrets, coverage, views)
        notes[view.name] = coverage.report(view.path)
    if not image:
        top.append(NotExported("--image", DEFAULT_IMAGE, "no image given: every service uses this placeholder"))
    text = f"# Generated by `orchestrator export compose` from {config.path or '<defaults>'}.\n"
    text += commentLines(top)
    body = dumpYAML({"services": services} if services else {"services": {}})
    # Each service's report goes right above it.
    lines = body.splitlines(keepends=True)
    out = []
    for line in lines:
        key = line[2:].rstrip(":\n").strip("'\"") if line[:2] == "  " and line[2:3] != " " else None
        if key in notes:
            out.extend("  " + comment for comment in commentLines(notes[key]).splitlines(keepends=True))
        out.append(line)
    result.files["-"] = text + "".join(out)
    if inlineSecrets and any(secret for v in views.values() for _, _, secret in v.environment(config.dotenv)):
        result.modes["-"] = 0o600
    result.notExported = top + [n for name in views for n in notes[name]]
    return result
