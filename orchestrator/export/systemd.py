"""
C{orchestrator export systemd}: one C{.service} unit per process (one per
replica when a process has C{replicas}), and for a process with secret
variables an environment file next to it.

systemd has no health probes: a probed process is exported without its
probe, and the report says so.  A process others wait for with
C{completed_successfully} becomes C{Type=oneshot} with
C{RemainAfterExit=yes}, so its dependents start only after it exited
successfully, exactly the orchestrator's meaning.
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator.config.types import Config
from orchestrator.export.common import (
    Coverage,
    Export,
    NotExported,
    ProcessView,
    commentLines,
    goDuration,
    parseBytes,
    processViews,
)

__all__ = ["exportSystemd", "RLIMIT_DIRECTIVES", "ENVIRONMENT_DIR"]

#: rlimit name -> unit directive.
RLIMIT_DIRECTIVES = {
    "nofile": "LimitNOFILE", "nproc": "LimitNPROC", "core": "LimitCORE", "memlock": "LimitMEMLOCK",
    "as": "LimitAS", "fsize": "LimitFSIZE", "cpu": "LimitCPU", "stack": "LimitSTACK",
}

#: Where a unit reads its secret variables from (C{%E} is C{/etc} for
#: system units); install the exported C{NAME.env} files there, mode 0600.
ENVIRONMENT_DIR = "%E/orchestrator"


def _escape(text: str) -> str:
    # Specifiers (%) are expanded in every setting, variables ($) in Exec lines.
    return text.replace("%", "%%")


def _quote(word: str, exec_: bool = True) -> str:
    text = _escape(word)
    if exec_:
        text = text.replace("$", "$$")
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _limit(value: Any) -> str | None:
    def one(v):
        if v == "unlimited":
            return "infinity"
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else None

    if isinstance(value, dict):
        soft, hard = one(value.get("soft")), one(value.get("hard"))
        return f"{soft}:{hard}" if soft and hard else None
    return one(value)


def _unitName(name: str, replica: int | None) -> str:
    return f"{name}-{replica}" if replica is not None else name


class _Unit:
    """
    Sections of one unit, in order, as (key, value) lines.
    """

    def __init__(self) -> None:
        self.sections: dict[str, list[tuple[str, str]]] = {"Unit": [], "Service": [], "Install": []}

    def add(self, section: str, key: str, value: Any) -> None:
        self.sections[section].append((key, str(value)))

    def render(self, header: str) -> str:
        out = [header]
        for section, lines in self.sections.items():
            if not lines:
                continue
            out.append(f"\n[{section}]\n")
            out.extend(f"{key}={value}\n" for key, value in lines)
        return "".join(out)


class _Builder:
    def __init__(self, config: Config, inlineSecrets: bool) -> None:
        self.config = config
        self.inlineSecrets = inlineSecrets
        self.coverage = Coverage(config, "systemd")
        self.views = {v.name: v for v in processViews(config)}
        self.oneshots = {
            dep for v in self.views.values() for dep, condition in v.dependencies.items()
            if condition == "completed_successfully"
        }

    def replicaNames(self, name: str) -> list[str]:
        view = self.views.get(name)
        if view is None or not self._replicated(view):
            return [f"{name}.service"]
        return [f"{_unitName(name, i)}.service" for i in range(view.replicas)]

    @staticmethod
    def _replicated(view: ProcessView) -> bool:
        return view.replicas != 1

    def substitute(self, view: ProcessView, text: str, replica: int) -> str:
        port = view.option("port")
        text = text.replace("{replica}", str(replica))
        if isinstance(port, int):
            text = text.replace("{port}", str(port + replica))
        return text

    def restart(self, view: ProcessView, unit: _Unit) -> None:
        r = view.path + ("restart",)
        restart = view.proc.restart
        cov = self.coverage
        cov.used(r + ("policy",), r + ("auto",))
        if not restart.auto or restart.policy == "never":
            unit.add("Service", "Restart", "no")
        elif restart.policy in ("always", "on-failure"):
            unit.add("Service", "Restart", restart.policy)
            unit.add("Service", "RestartSec", goDuration(float(restart.options.get("interval", 1))))
            cov.used(r + ("interval",))
        elif restart.policy == "backoff":
            backoff = restart.options.get("backoff", {})
            initial, factor, cap = (float(backoff.get(k, d)) for k, d in
                                    (("initial", 0.1), ("factor", 2), ("max", 30)))
            unit.add("Service", "Restart", "always")
            unit.add("Service", "RestartSec", goDuration(initial))
            if cap > initial and factor > 1 and initial > 0:
                # systemd grows the delay exponentially from RestartSec to
                # RestartMaxDelaySec in RestartSteps steps (systemd >= 254).
                steps = max(1, math.ceil(math.log(cap / initial) / math.log(factor)))
                unit.add("Service", "RestartSteps", steps)
                unit.add("Service", "RestartMaxDelaySec", goDuration(cap))
            cov.used(r + ("backoff", "initial"), r + ("backoff", "factor"), r + ("backoff", "max"))
        else:
            unit.add("Service", "Restart", "on-failure")
            cov.skip(r + ("policy",), "custom restart policy: exported as Restart=on-failure")
        if restart.auto and restart.policy != "never":
            unit.add("Unit", "StartLimitBurst", restart.max_attempts + 1)
            unit.add("Unit", "StartLimitIntervalSec", goDuration(restart.reset_after))
        cov.used(r + ("max_attempts",), r + ("reset_after",))
        codes = [c for c in restart.success_exit_codes if c != 0]
        if codes:
            unit.add("Service", "SuccessExitStatus", " ".join(map(str, codes)))
        cov.used(r + ("success_exit_codes",))

    def dependencies(self, view: ProcessView, unit: _Unit) -> None:
        for name, condition in view.dependencies.items():
            units = " ".join(self.replicaNames(name))
            unit.add("Unit", "Requires", units)
            unit.add("Unit", "After", units)
            dep = self.views.get(name)
            probed = dep is not None and dep.proc.health.probe != "none"
            if condition == "healthy" or (condition == "running" and probed):
                self.coverage.skip(view.path + ("depends_on", name), "systemd orders on the start of "
                                   f"{name}, not on its health (systemd has no probes)", condition)
        self.coverage.used(view.path + ("depends_on",))

    def environment(self, view: ProcessView, unit: _Unit, replica: int | None, files: dict) -> None:
        secrets = []
        for name, value, secret in view.environment(self.config.dotenv):
            value = self.substitute(view, value, replica or 0)
            if secret:
                secrets.append(f"{name}={value if self.inlineSecrets else ''}\n")
            else:
                unit.add("Service", "Environment", _quote(f"{name}={value}", exec_=False))
        if view.option("replicas") is not None or view.option("port") is not None:
            unit.add("Service", "Environment", _quote(f"ORCHESTRATOR_REPLICA={replica or 0}", exec_=False))
            port = view.option("port")
            if isinstance(port, int):
                unit.add("Service", "Environment", _quote(f"PORT={port + (replica or 0)}", exec_=False))
        if secrets:
            envName = f"{_unitName(view.name, replica)}.env"
            note = "" if self.inlineSecrets else "# Fill in the values (or export with --inline-secrets).\n"
            files[envName] = (f"# Secret variables of {view.name}: install as {ENVIRONMENT_DIR}/{envName} "
                              "(mode 0600).\n" + note + "".join(secrets))
            unit.add("Service", "EnvironmentFile", f"-{ENVIRONMENT_DIR}/{envName}")
        p = view.path
        self.coverage.used(p + ("env",), p + ("env_from_dotenv",))
        if not view.proc.inherit_env:
            self.coverage.used(p + ("inherit_env",))  # a unit starts from a minimal environment

    def unit(self, view: ProcessView, replica: int | None, files: dict) -> _Unit:
        p = view.path
        cov = self.coverage
        unit = _Unit()
        unit.add("Unit", "Description", _escape(
            f"{_unitName(view.name, replica)} (exported from {self.config.path or 'defaults'})"))
        self.dependencies(view, unit)
        oneshot = view.name in self.oneshots
        unit.add("Service", "Type", "oneshot" if oneshot else "exec")
        if oneshot:
            unit.add("Service", "RemainAfterExit", "yes")
        command = [self.substitute(view, arg, replica or 0) for arg in view.proc.command]
        unit.add("Service", "ExecStart", " ".join(_quote(arg) for arg in command))
        unit.add("Service", "WorkingDirectory", _escape(self.substitute(view, view.proc.working_dir, replica or 0)))
        cov.used(p + ("command",), p + ("working_dir",), p + ("replicas",), p + ("port",))
        self.environment(view, unit, replica, files)
        for key, directive in (("user", "User"), ("group", "Group"), ("umask", "UMask")):
            value = view.option(key)
            if value is not None:
                unit.add("Service", directive, _escape(str(value)))
                cov.used(p + (key,))
        self.restart(view, unit)
        unit.add("Service", "KillSignal", "SIG" + view.proc.stop.signal)
        unit.add("Service", "TimeoutStopSec", goDuration(view.proc.stop.timeout))
        cov.used(p + ("stop",))
        for name, value in (view.option("rlimits") or {}).items():
            directive, text = RLIMIT_DIRECTIVES.get(name), _limit(value)
            if directive and text:
                unit.add("Service", directive, text)
                cov.used(p + ("rlimits", name))
            else:
                cov.skip(p + ("rlimits", name), "no systemd Limit*= for it")
        size = parseBytes(view.option("max_memory"))
        if size is not None:
            # systemd's cgroup limit is enforced by the kernel, continuously.
            unit.add("Service", "MemoryMax", size)
            cov.used(p + ("max_memory",), p + ("memory_check_interval",))
        self.logs(view, unit)
        health = view.proc.health
        if health.probe != "none":
            cov.skip(p + ("health",), "systemd has no health probes (the unit is up while the process "
                     "runs; add a timer or an ExecStartPost= check if you need one)", health.probe)
            cov.used(p + ("url",))
        else:
            cov.used(p + ("health", "probe"))
        if view.proc.autostart:
            unit.add("Install", "WantedBy", "multi-user.target")
        cov.used(p + ("autostart",))
        return unit

    def logs(self, view: ProcessView, unit: _Unit) -> None:
        log = view.raw.get("log") or {}
        p = view.path + ("log",)
        targets = {"StandardOutput": log.get("stdout") or log.get("file"),
                   "StandardError": log.get("stderr") or log.get("file")}
        for directive, path in targets.items():
            if path:
                unit.add("Service", directive, "append:" + _escape(self._absolute(path)))
        self.coverage.used(p + ("file",), p + ("stdout",), p + ("stderr",), p + ("echo",))
        for key in ("max_bytes", "backups"):
            if self.coverage.setByOperator(p + (key,)):
                self.coverage.skip(p + (key,), "systemd appends without rotating: use logrotate or the journal")

    def _absolute(self, path: str) -> str:
        import os

        base = os.path.dirname(self.config.path) if self.config.path else os.getcwd()
        return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def exportSystemd(config: Config, inlineSecrets: bool = False) -> Export:
    """
    Render a configuration as systemd units: file name -> text.

    @param inlineSecrets: write secret values into the C{NAME.env} files
        instead of empty assignments.
    """
    builder = _Builder(config, inlineSecrets)
    result = Export()
    top = builder.coverage.orchestratorReport()
    result.notExported.extend(top)
    source = config.path or "<defaults>"
    for view in builder.views.values():
        if not view.proc.command:
            result.notExported.append(NotExported(f"processes.{view.name}.command", [],
                                                  "no command (monitor-only): no unit written"))
            continue
        replicas = list(range(view.replicas)) if builder._replicated(view) else [None]
        units = {}
        for replica in replicas:
            units[f"{_unitName(view.name, replica)}.service"] = builder.unit(view, replica, result.files)
        notes = builder.coverage.report(view.path)
        result.notExported.extend(notes)
        header = (f"# Generated by `orchestrator export systemd` from {source}.\n"
                  + commentLines(top) + commentLines(notes))
        for fileName, unit in units.items():
            result.files[fileName] = unit.render(header)
    for name in result.files:
        if name.endswith(".env"):
            result.modes[name] = 0o600
    return result
