"""
C{orchestrator export kubernetes}: one C{Deployment} (or C{Job}) per
process, a C{Service} per process with a port, one C{Secret} for the
values that must not sit in a manifest, and what waiting for a Job needs.

The mapping is the README's "Export" table.  Kubernetes counts whole
seconds, so fractional durations are rounded up (a probe never runs more
often than configured) and the rounding is reported.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.config.types import Config
from orchestrator.export.common import (
    Coverage,
    Export,
    NotExported,
    ProcessView,
    commentLines,
    dumpYAML,
    parseBytes,
    processViews,
    readProbe,
    wholeSeconds,
)

__all__ = ["exportKubernetes", "dnsName", "DEFAULT_IMAGE", "KUBECTL_IMAGE"]

#: The image used when C{--image} is not given (reported).
DEFAULT_IMAGE = "app:latest"
#: The image of the init container that waits for a Job.
KUBECTL_IMAGE = "registry.k8s.io/kubectl:v1.34.0"
#: A startupProbe that waits forever (C{start_timeout: 0}).
_FOREVER = 2**31 - 1
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "", None}


def dnsName(name: str) -> str:
    """
    A process name as an RFC 1035 label (lower case, C{-}, at most 63
    characters, starting with a letter), as Services need.
    """
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = "p-" + label
    return label[:63].rstrip("-")


class _Rounding:
    def __init__(self, coverage: Coverage) -> None:
        self.coverage = coverage

    def seconds(self, path: tuple, seconds: float, minimum: int = 1) -> int:
        whole = wholeSeconds(seconds, minimum)
        if whole != seconds:
            self.coverage.skip(path, f"rounded to {whole}s (Kubernetes counts whole seconds)", seconds)
        else:
            self.coverage.used(path)
        return whole


def _handler(view: ProcessView, coverage: Coverage) -> dict | None:
    """
    The probe's action (C{httpGet}, C{tcpSocket} or C{exec}), or C{None}.
    """
    probe = readProbe(view, coverage, "a Kubernetes probe")
    if probe is None:
        return None
    if probe.kind == "exec":
        return {"exec": {"command": list(probe.argv)}}
    if probe.host not in _LOOPBACK:
        coverage.skip(view.path + ("url",), f"Kubernetes probes the pod's own address, not {probe.host}",
                      view.proc.url)
    if probe.kind == "tcp":
        return {"tcpSocket": {"port": probe.port}}
    action: dict[str, Any] = {"path": probe.path, "port": probe.port, "scheme": probe.scheme.upper()}
    if probe.headers:
        action["httpHeaders"] = [{"name": k, "value": v} for k, v in probe.headers.items()]
    return {"httpGet": action}


def _probes(view: ProcessView, coverage: Coverage) -> dict:
    """
    The container's probes: readiness always (an unhealthy process leaves
    the Service), liveness when an unhealthy process is restarted, and a
    startupProbe for the start phase.
    """
    handler = _handler(view, coverage)
    if handler is None:
        return {}
    health = view.proc.health
    hp = view.path + ("health",)
    rounding = _Rounding(coverage)
    period = rounding.seconds(hp + ("interval",), health.interval)
    timeout = rounding.seconds(hp + ("timeout",), health.timeout)
    common = {**handler, "periodSeconds": period, "timeoutSeconds": timeout,
              "failureThreshold": health.failure_threshold}
    coverage.used(hp + ("failure_threshold",), hp + ("success_threshold",), hp + ("history",),
                  hp + ("restart_on_unhealthy",))
    probes = {"readinessProbe": {**common, "successThreshold": health.success_threshold}}
    if health.restart_on_unhealthy:
        probes["livenessProbe"] = {**common, "successThreshold": 1}
    startEvery = rounding.seconds(hp + ("start_interval",), health.start_interval)
    startup = {**handler, "periodSeconds": startEvery, "timeoutSeconds": timeout, "successThreshold": 1}
    if health.start_period:
        startup["initialDelaySeconds"] = rounding.seconds(hp + ("start_period",), health.start_period)
    else:
        coverage.used(hp + ("start_period",))
    if health.start_timeout:
        startup["failureThreshold"] = max(1, wholeSeconds(health.start_timeout / startEvery))
    else:
        startup["failureThreshold"] = _FOREVER
    coverage.used(hp + ("start_timeout",))
    probes["startupProbe"] = startup
    return probes


def _memory(view: ProcessView, coverage: Coverage) -> dict:
    value = view.option("max_memory")
    if value is None:
        return {}
    coverage.used(view.path + ("max_memory",), view.path + ("memory_check_interval",))
    size = parseBytes(value)
    if size is None:
        coverage.skip(view.path + ("max_memory",), "not a size this exporter reads")
        return {}
    return {"resources": {"limits": {"memory": str(size)}}}


def _security(view: ProcessView, coverage: Coverage) -> dict:
    context = {}
    for key, field in (("user", "runAsUser"), ("group", "runAsGroup")):
        value = view.option(key)
        if value is None:
            continue
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            context[field] = int(value)
            coverage.used(view.path + (key,))
        else:
            coverage.skip(view.path + (key,), f"{field} needs a numeric id; set it in the image (USER)")
    return {"securityContext": context} if context else {}


def _literal(text: str) -> str:
    """
    Kubernetes expands C{$(VAR)} in command, args and env values; the
    orchestrator passes them as written, so C{$(} is escaped as C{$$(}.
    """
    return text.replace("$(", "$$(")


def _substitute(view: ProcessView, text: str, coverage: Coverage, path: tuple) -> str:
    if "{replica}" not in text and "{port}" not in text:
        return text
    coverage.skip(path, "every pod of a Deployment runs the same command: {replica} is 0 "
                  "and {port} is the first port here", text)
    port = view.option("port")
    return text.replace("{replica}", "0").replace("{port}", str(port) if port is not None else "{port}")


class _Builder:
    def __init__(self, config: Config, image: str, namespace: str | None, inlineSecrets: bool) -> None:
        self.config = config
        self.image = image
        self.namespace = namespace
        self.inlineSecrets = inlineSecrets
        self.coverage = Coverage(config, "Kubernetes")
        self.views = processViews(config)
        self.names = {v.name: dnsName(v.name) for v in self.views}
        stem = config.path.rsplit("/", 1)[-1].rsplit(".", 1)[0] if config.path else "orchestrator"
        self.prefix = dnsName(stem)
        self.secretName = f"{self.prefix}-secrets"
        self.secretData: dict[str, str] = {}
        self.waiter = f"{self.prefix}-job-waiter"
        self.needsWaiter = False
        self.jobs = {v.name for v in self.views if v.proc.restart.policy == "never"}

    def meta(self, name: str, process: str | None = None) -> dict:
        meta: dict[str, Any] = {"name": name}
        if self.namespace:
            meta["namespace"] = self.namespace
        labels = {"app.kubernetes.io/part-of": self.prefix, "app.kubernetes.io/managed-by": "orchestrator-export"}
        if process is not None:
            labels["app.kubernetes.io/name"] = self.names[process]
        meta["labels"] = labels
        return meta

    def env(self, view: ProcessView) -> list[dict]:
        out = []
        for name, value, secret in view.environment(self.config.dotenv):
            value = _substitute(view, value, self.coverage, view.path + ("env", name))
            if secret:
                key = f"{view.name}.{name}"
                self.secretData[key] = value if self.inlineSecrets else ""
                out.append({"name": name, "valueFrom": {"secretKeyRef": {"name": self.secretName, "key": key}}})
            else:
                out.append({"name": name, "value": _literal(value)})
        self.coverage.used(view.path + ("env",), view.path + ("env_from_dotenv",))
        if not view.proc.inherit_env:
            self.coverage.skip(view.path + ("inherit_env",), "a container always starts with its "
                               "image's environment")
        else:
            self.coverage.used(view.path + ("inherit_env",))
        return out

    def waitFor(self, view: ProcessView) -> list[dict]:
        """
        Init containers for C{completed_successfully} dependencies on Jobs;
        other conditions are reported.
        """
        containers = []
        for name, condition in view.dependencies.items():
            path = view.path + ("depends_on",)
            if condition == "completed_successfully" and name in self.jobs:
                self.needsWaiter = True
                containers.append({
                    "name": f"wait-for-{self.names[name]}"[:63],
                    "image": KUBECTL_IMAGE,
                    "command": ["kubectl", "wait", "--for=condition=complete", f"job/{self.names[name]}",
                                "--timeout=-1s"],
                })
            else:
                self.coverage.skip(path + (name,), f"Kubernetes starts pods independently ({condition}): "
                                   f"the process must retry until {self.names.get(name, name)} is ready",
                                   condition)
        self.coverage.used(view.path + ("depends_on",))
        return containers

    def container(self, view: ProcessView) -> dict:
        p = view.path
        command = [_substitute(view, arg, self.coverage, p + ("command",)) for arg in view.command]
        container: dict[str, Any] = {"name": self.names[view.name], "image": self.image}
        if command:
            container["command"] = [_literal(command[0])]
        else:
            self.coverage.skip(p + ("command",), "no command (monitor-only): the image's entrypoint runs", [])
        if command[1:]:
            container["args"] = [_literal(arg) for arg in command[1:]]
        self.coverage.used(p + ("command",))
        if view.workingDir:
            container["workingDir"] = _substitute(view, view.workingDir, self.coverage, p + ("working_dir",))
        self.coverage.used(p + ("working_dir",))
        env = self.env(view)
        if env:
            container["env"] = env
        port = view.port
        if port is not None:
            container["ports"] = [{"name": "main", "containerPort": port, "protocol": "TCP"}]
            self.coverage.used(p + ("port",), p + ("url",))
        container.update(_probes(view, self.coverage))
        container.update(_memory(view, self.coverage))
        container.update(_security(view, self.coverage))
        for key, why in (("umask", "a container has no umask setting: set it in the image's entrypoint"),
                         ("rlimits", "Kubernetes sets no per-container rlimits: the container runtime's "
                                     "defaults apply (or set them in the image's entrypoint)")):
            if view.option(key) is not None:
                self.coverage.skip(p + (key,), why, view.option(key))
        return container

    def podSpec(self, view: ProcessView, restartPolicy: str) -> dict:
        p = view.path
        stop = view.proc.stop
        spec: dict[str, Any] = {}
        init = self.waitFor(view)
        if init:
            spec["serviceAccountName"] = self.waiter
            spec["initContainers"] = init
        spec["containers"] = [self.container(view)]
        spec["restartPolicy"] = restartPolicy
        spec["terminationGracePeriodSeconds"] = _Rounding(self.coverage).seconds(
            p + ("stop", "timeout"), stop.timeout, minimum=0)
        if stop.signal != "TERM":
            self.coverage.skip(p + ("stop", "signal"), "Kubernetes stops containers with SIGTERM or the "
                               f"image's STOPSIGNAL: put STOPSIGNAL SIG{stop.signal} in the image")
        else:
            self.coverage.used(p + ("stop", "signal"))
        return spec

    def restart(self, view: ProcessView, job: bool) -> None:
        r = view.path + ("restart",)
        restart = view.proc.restart
        self.coverage.used(r + ("policy",))
        if job:
            self.coverage.used(r + ("max_attempts",), r + ("auto",))
            return
        if restart.policy == "backoff":
            self.coverage.used(r + ("backoff",))
            if self.coverage.anySetByOperator(r + ("backoff",)):
                self.coverage.skip(r + ("backoff",), "Kubernetes applies its own CrashLoopBackOff "
                                   "(10s doubling to 5m)", dict(restart.options.get("backoff", {})))
        elif restart.policy == "on-failure":
            self.coverage.skip(r + ("policy",), "a Deployment restarts after every exit, clean or not")
        elif restart.policy != "always":
            self.coverage.skip(r + ("policy",), "custom restart policy: a Deployment always restarts "
                               "with CrashLoopBackOff")
        if restart.options.get("interval") is not None:
            self.coverage.skip(r + ("interval",), "Kubernetes applies its own CrashLoopBackOff")
        # Reported only when the operator set it (the default is everywhere).
        self.coverage.used(r + ("max_attempts",))
        if self.coverage.setByOperator(r + ("max_attempts",)):
            self.coverage.skip(r + ("max_attempts",), "a Deployment never gives up restarting")
        if not restart.auto:
            self.coverage.skip(r + ("auto",), "a Deployment always restarts its containers")
        else:
            self.coverage.used(r + ("auto",))

    def deployment(self, view: ProcessView) -> dict:
        replicas = view.replicas if view.proc.autostart else 0
        self.coverage.used(view.path + ("replicas",), view.path + ("autostart",))
        self.restart(view, job=False)
        spec: dict[str, Any] = {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": self.names[view.name]}},
        }
        readyAfter = view.proc.ready_after
        if view.proc.health.probe == "none" and readyAfter:
            spec["minReadySeconds"] = _Rounding(self.coverage).seconds(
                view.path + ("start", "ready_after"), readyAfter, minimum=0)
        else:
            self.coverage.used(view.path + ("start",))
        spec["template"] = {"metadata": {"labels": self.meta("x", view.name)["labels"]},
                            "spec": self.podSpec(view, "Always")}
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": self.meta(self.names[view.name], view.name), "spec": spec}

    def job(self, view: ProcessView) -> dict:
        self.coverage.used(view.path + ("replicas",), view.path + ("autostart",), view.path + ("start",))
        self.restart(view, job=True)
        spec: dict[str, Any] = {"backoffLimit": 0}
        if view.replicas > 1:
            spec["completions"] = spec["parallelism"] = view.replicas
        if not view.proc.autostart:
            spec["suspend"] = True
        codes = view.proc.restart.success_exit_codes
        if tuple(codes) != (0,):
            self.coverage.skip(view.path + ("restart", "success_exit_codes"),
                               "a Job succeeds on exit code 0 only", list(codes))
        spec["template"] = {"metadata": {"labels": self.meta("x", view.name)["labels"]},
                            "spec": self.podSpec(view, "Never")}
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": self.meta(self.names[view.name], view.name), "spec": spec}

    def service(self, view: ProcessView) -> dict:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": self.meta(self.names[view.name], view.name),
                "spec": {"selector": {"app.kubernetes.io/name": self.names[view.name]},
                         "ports": [{"name": "main", "port": view.port, "targetPort": "main",
                                    "protocol": "TCP"}]}}

    def waiterObjects(self) -> list[dict]:
        return [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self.meta(self.waiter)},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": self.meta(self.waiter),
             "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": self.meta(self.waiter),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": self.waiter},
             "subjects": [{"kind": "ServiceAccount", "name": self.waiter,
                           **({"namespace": self.namespace} if self.namespace else {})}]},
        ]


def exportKubernetes(config: Config, image: str | None = None, namespace: str | None = None,
                     inlineSecrets: bool = False) -> Export:
    """
    Render a configuration as Kubernetes manifests.

    @param image: the container image of every process (default
        L{DEFAULT_IMAGE}, reported).
    @param namespace: set on every object when given.
    @param inlineSecrets: fill the generated C{Secret} with the values
        (literal and C{.env}); by default its values are left empty.
    @return: one multi-document YAML text (C{"-"}) and the report.
    """
    builder = _Builder(config, image or DEFAULT_IMAGE, namespace, inlineSecrets)
    result = Export()
    documents: list[tuple[dict, list[NotExported]]] = []
    top = builder.coverage.orchestratorReport()
    if not image:
        top.append(NotExported("--image", DEFAULT_IMAGE, "no image given: every container uses this placeholder"))
    seen: dict[str, str] = {}
    for view in builder.views:
        name = builder.names[view.name]
        if name in seen:
            top.append(NotExported(f"processes.{view.name}", name, f"its Kubernetes name collides with "
                                   f"process {seen[name]!r}; rename one of them"))
            continue
        seen[name] = view.name
        obj = builder.job(view) if view.name in builder.jobs else builder.deployment(view)
        notes = builder.coverage.report(view.path)
        documents.append((obj, notes))
        if view.port is not None:
            documents.append((builder.service(view), []))
        result.notExported.extend(notes)
    extra = []
    if builder.secretData:
        extra.append(({"apiVersion": "v1", "kind": "Secret", "metadata": builder.meta(builder.secretName),
                       "type": "Opaque", "stringData": builder.secretData}, []))
    if builder.needsWaiter:
        extra.extend((obj, []) for obj in builder.waiterObjects())
    source = config.path or "<defaults>"
    header = f"# Generated by `orchestrator export kubernetes` from {source}.\n" + commentLines(top)
    if builder.secretData and not inlineSecrets:
        header += ("# The Secret's values are empty: fill them in, or export again with --inline-secrets.\n")
    parts = [commentLines(notes) + dumpYAML(obj) for obj, notes in extra + documents]
    result.files["-"] = header + "---\n".join(parts)
    if inlineSecrets and any(builder.secretData.values()):
        result.modes["-"] = 0o600
    result.notExported[:0] = top
    return result
