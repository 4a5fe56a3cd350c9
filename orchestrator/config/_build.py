"""
Build the typed, immutable L{Config} from a merged and validated document.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from dataclasses import dataclass

from orchestrator._interning import Interner
from orchestrator.config.types import (
    AdminConfig,
    Config,
    HealthConfig,
    Identity,
    LoggingConfig,
    MetricsConfig,
    NotifierConfig,
    OutputConfig,
    PackedMapping,
    ProcessConfig,
    RestartConfig,
    StopConfig,
    freeze,
)
from orchestrator.config._problems import dottedPath
from orchestrator.config._sizes import parseBytes

__all__ = ["buildConfig", "NEVER_INHERITED", "resolveIdentity"]

#: Variables that never reach a child, whatever C{inherit_env} says.
NEVER_INHERITED = frozenset(
    {"ORCHESTRATOR_ADMIN_TOKEN", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
     "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"}
)


def _resolvePath(baseDir: str, value: str | None) -> str | None:
    if value is None:
        return None
    return os.path.normpath(os.path.join(baseDir, os.path.expanduser(value)))


def buildConfig(data: dict, filename, baseDir, sources, dotenv, kinds, environ, secretNames) -> Config:
    """
    @param data: the merged document, defaults filled, already valid.
    @param sources: JSON path (a tuple) -> where its value came from.
    @param secretNames: variables that set the admin token (never inherited).
    """
    orch = data["orchestrator"]
    adminData = data["admin"]
    processes = {}
    replicated = {name: _instanceNames(name, p) for name, p in data["processes"].items()}
    # Processes configured alike share their equal settings (one object).
    share = Interner()
    for name, p in data["processes"].items():
        for replica, instanceName in enumerate(replicated[name]):
            instance = _Instance(instanceName, replica if p.get("replicas") is not None else None,
                                 p.get("port"))
            processes[instanceName] = _buildProcess(name, p, baseDir, kinds, instance, replicated, share)
    notifiers = []
    secretEnv = []
    for i, n in enumerate(data["notifiers"]):
        keys = set(kinds.notifiers[n["type"]].config_schema.get("properties", {}))
        options = {k: v for k, v in n.items() if k in keys}
        if isinstance(options.get("secret_env"), str):
            secretEnv.append(options["secret_env"])
        notifiers.append(
            NotifierConfig(
                type=n["type"],
                events=tuple(n["events"]) if n["events"] is not None else None,
                options=freeze(options),
                index=i,
                env=freeze({**dotenv, **environ}),
            )
        )
    stateDir = _resolvePath(baseDir, orch["state_dir"])
    return Config(
        path=filename,
        enabled=orch["enabled"],
        state_dir=stateDir,
        shutdown_timeout=float(orch["shutdown_timeout"]),
        max_concurrent_probes=orch["max_concurrent_probes"],
        tls=orch["tls"],
        admin=AdminConfig(
            listen=adminData["listen"],
            token=adminData["token"],
            allow_insecure=adminData["allow_insecure"],
            default_process=adminData["default_process"],
            allowed_origins=tuple(adminData["allowed_origins"]),
            allowed_hosts=tuple(adminData["allowed_hosts"]),
            metrics_requires_token=adminData["metrics_requires_token"],
            max_body_bytes=adminData["max_body_bytes"],
            max_json_depth=adminData["max_json_depth"],
            max_connections=adminData["max_connections"],
            idle_timeout=float(adminData["idle_timeout"]),
            header_timeout=float(adminData["header_timeout"]),
            body_timeout=float(adminData["body_timeout"]),
            access_log=adminData["access_log"],
            max_stream_clients=adminData["max_stream_clients"],
            stream_buffer_bytes=adminData["stream_buffer_bytes"],
            stream_keepalive=float(adminData["stream_keepalive"]),
            stream_stall_timeout=float(adminData["stream_stall_timeout"]),
            stream_max_seconds=float(adminData["stream_max_seconds"]),
        ),
        logging=LoggingConfig(
            level=data["logging"]["level"],
            format=data["logging"]["format"],
            file=_resolvePath(baseDir, data["logging"]["file"]),
            max_bytes=data["logging"]["max_bytes"],
            backups=data["logging"]["backups"],
        ),
        metrics=MetricsConfig(
            seed_names=data["metrics"]["seed_names"],
            health_buckets=tuple(float(b) for b in data["metrics"]["health_buckets"]),
        ),
        plugins=tuple(data["plugins"]),
        processes=freeze(processes),
        notifiers=tuple(notifiers),
        sources=PackedMapping(sources, key=dottedPath),
        dotenv=freeze(dotenv),
        secret_env=tuple(sorted(NEVER_INHERITED | set(secretEnv) | secretNames)),
        document=PackedMapping(_redacted(data)),
    )


def _redacted(data: dict) -> dict:
    # Copies only what changes: PackedMapping packs a copy of the whole document anyway.
    admin = data.get("admin", {})
    if admin.get("token"):
        return {**data, "admin": {**admin, "token": "********"}}
    return data


@dataclass(frozen=True)
class _Instance:
    """
    One instance of a process: its name, replica number (C{None}: not
    replicated) and port (C{None}: no C{port} key).
    """

    name: str
    replica: int | None
    basePort: int | None

    @property
    def port(self) -> int | None:
        if self.basePort is None:
            return None
        return self.basePort + (self.replica or 0)

    def substitute(self, value: str | None) -> str | None:
        """
        C{{replica}} and C{{port}} replaced in a command word, an C{env}
        value, the url or the working folder.
        """
        if value is None:
            return None
        value = value.replace("{replica}", str(self.replica or 0))
        if self.port is not None:
            value = value.replace("{port}", str(self.port))
        return value


def _instanceNames(name: str, p: dict) -> list[str]:
    """
    The process names C{p} runs as: C{NAME}, or C{NAME-0} ...
    C{NAME-(N-1)} when it sets C{replicas}.
    """
    replicas = p.get("replicas")
    if replicas is None:
        return [name]
    return [f"{name}-{i}" for i in range(replicas)]


def resolveIdentity(user, group) -> Identity | None:
    """
    The uid, gid, login name and home folder of C{user} and C{group}
    (names or numbers).

    @raise KeyError: an unknown user or group, with the problem as its
        only argument.
    """
    if user is None and group is None:
        return None
    name = uid = gid = home = None
    if user is not None:
        text = str(user)
        try:
            entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
        except KeyError:
            if not text.isdigit():
                raise KeyError(f"unknown user {text!r}") from None
            if group is None:  # never root's group by default
                raise KeyError(f"uid {text} has no passwd entry: set group as well") from None
            uid = int(text)  # a numeric uid with a group needs no passwd entry
        else:
            name, uid, gid, home = entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir
    if group is not None:
        text = str(group)
        if text.isdigit():
            gid = int(text)
        else:
            try:
                gid = grp.getgrnam(text).gr_gid
            except KeyError:
                raise KeyError(f"unknown group {text!r}") from None
    return Identity(name=name, uid=uid, gid=gid, home=home)


def _buildProcess(name: str, p: dict, baseDir: str, kinds, instance: _Instance,
                  replicated: dict, share: Interner) -> ProcessConfig:
    sub = instance.substitute
    command = [sub(word) for word in (p.get("command") or ())]
    if command and os.sep in command[0]:
        command[0] = _resolvePath(baseDir, command[0])
    elif command:
        searchPath = p["env"].get("PATH") or os.environ.get("PATH", os.defpath)
        command[0] = shutil.which(command[0], path=searchPath) or command[0]
    restart = p["restart"]
    health = p["health"]
    policyKeys = set(kinds.policies[restart["policy"]].config_schema.get("properties", {}))
    probe = health["probe"]
    probeKeys = (
        set(kinds.probes[probe].config_schema.get("properties", {}))
        if probe in kinds.probes else set()
    )
    restartOnUnhealthy = health["restart_on_unhealthy"]
    env = {k: sub(v) for k, v in p["env"].items()}
    if instance.replica is not None:
        env.setdefault("ORCHESTRATOR_REPLICA", str(instance.replica))
    if instance.port is not None:
        env.setdefault("PORT", str(instance.port))
    deps = p["depends_on"]
    conditions = deps if isinstance(deps, dict) else {d: {"condition": "running"} for d in deps}
    dependsOn = {}
    for dep, spec in conditions.items():
        for depName in replicated.get(dep, [dep]):
            dependsOn[depName] = spec["condition"]
    url = sub(p["url"])
    memory = parseBytes(p.get("max_memory"))
    return ProcessConfig(
        name=instance.name,
        command=share(tuple(command)),
        url=url,
        working_dir=_resolvePath(baseDir, sub(p["working_dir"])) or baseDir,
        env=share(freeze(env)),
        inherit_env=p["inherit_env"],
        env_from_dotenv=share(tuple(p["env_from_dotenv"])),
        depends_on=share(freeze(dependsOn)),
        groups=share(tuple(p["groups"])),
        autostart=p["autostart"],
        replicas=p.get("replicas"),
        replica=instance.replica,
        port=instance.port,
        user=None if p["user"] is None else str(p["user"]),
        group=None if p["group"] is None else str(p["group"]),
        identity=resolveIdentity(p["user"], p["group"]),
        umask=p["umask"],
        rlimits=share(freeze(p["rlimits"])),
        max_memory=memory,
        memory_check_interval=float(p["memory_check_interval"]),
        ready_after=float(p["start"]["ready_after"]),
        stop=share(StopConfig(signal=p["stop"]["signal"], timeout=float(p["stop"]["timeout"]))),
        restart=share(RestartConfig(
            policy=restart["policy"],
            auto=restart["auto"],
            max_attempts=restart["max_attempts"],
            delay=float(restart["delay"]),
            reset_after=float(restart["reset_after"]),
            success_exit_codes=tuple(restart["success_exit_codes"]),
            options=freeze({k: v for k, v in restart.items() if k in policyKeys}),
        )),
        health=HealthConfig(
            probe=probe,
            interval=float(health["interval"]),
            timeout=float(health["timeout"]),
            failure_threshold=health["failure_threshold"],
            success_threshold=health["success_threshold"],
            start_period=float(health["start_period"]),
            start_interval=float(health["start_interval"]),
            start_timeout=float(health["start_timeout"]),
            restart_on_unhealthy=(
                restart["auto"] if restartOnUnhealthy is None else restartOnUnhealthy
            ),
            history=health["history"],
            url=url,
            process=instance.name,
            options=share(freeze({k: v for k, v in health.items() if k in probeKeys})),
        ),
        output=share(OutputConfig(
            file=_resolvePath(baseDir, sub(p["log"]["file"])),
            stdout=_resolvePath(baseDir, sub(p["log"]["stdout"])),
            stderr=_resolvePath(baseDir, sub(p["log"]["stderr"])),
            max_bytes=p["log"]["max_bytes"],
            backups=p["log"]["backups"],
            lines=p["log"]["lines"],
            max_line_bytes=p["log"]["max_line_bytes"],
            echo=p["log"]["echo"],
            echo_rate=p["log"]["echo_rate"],
        )),
    )
