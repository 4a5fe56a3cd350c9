"""
The validated configuration as immutable, typed values.

Built once by L{orchestrator.config.loadConfig} from a merged and validated
document; nothing downstream sees raw YAML.  Kind-specific options (an http
probe's C{path}, the backoff policy's C{backoff} block, a webhook's C{url})
stay in read-only C{options} mappings, since their shape belongs to the
plugin that defined it.

Values compare by value, which is what reloading diffs on.
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass, field
from collections.abc import Mapping  # (typing's isinstance is 10x slower)
from types import MappingProxyType
from typing import Any, Callable, Iterator

__all__ = [
    "freeze",
    "thaw",
    "PackedMapping",
    "Config",
    "AdminConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ProcessConfig",
    "StopConfig",
    "RestartConfig",
    "HealthConfig",
    "OutputConfig",
    "NotifierConfig",
    "Identity",
    "RLIMIT_NAMES",
]

#: The resource limits a process may set (C{rlimits}), as C{RLIMIT_*} suffixes.
RLIMIT_NAMES = ("nofile", "nproc", "core", "memlock", "as", "fsize", "cpu", "stack")


def freeze(value: Any) -> Any:
    """
    Deep-convert dicts to read-only mappings and lists to tuples.
    """
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """
    The inverse of L{freeze}, for JSON output.
    """
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


_EMPTY: Mapping[str, Any] = MappingProxyType({})


class PackedMapping(Mapping):
    """
    A read-only mapping kept compressed until it is first read.

    L{Config.sources} and L{Config.document} hold an entry for every
    setting of every process, defaults included (some fifty per process:
    about 8 KiB each, 4 MiB for 500 processes), yet only C{check-config}
    and C{export} read them; the running orchestrator never does.  So they
    are kept as a compressed pickle (equal processes compress to almost
    nothing), unpacked on the first read into what L{freeze} would have
    made and kept from then on: to every reader it is the same read-only
    mapping.  L{peek} answers one question without keeping anything.

    @param key: applied to each key when unpacking (the loader's JSON paths
        stay tuples until someone reads them as dotted strings).
    """

    __slots__ = ("_packed", "_length", "_value", "_key")

    def __init__(self, value: Mapping[Any, Any], key: Callable[[Any], str] | None = None) -> None:
        plain = thaw(value)
        self._packed = zlib.compress(pickle.dumps(plain, pickle.HIGHEST_PROTOCOL))
        # (Two keys may render alike: then only the unpacked mapping knows.)
        self._length = len(plain) if key is None else None
        self._key = key
        self._value: Mapping[str, Any] | None = None

    def _unpack(self) -> Mapping[str, Any]:
        plain = pickle.loads(zlib.decompress(self._packed))
        if self._key is not None:
            plain = {self._key(k): v for k, v in plain.items()}
        return freeze(plain)

    def _unpacked(self) -> Mapping[str, Any]:
        if self._value is None:
            self._value, self._packed = self._unpack(), b""
        return self._value

    def peek(self, key: str, default: Any = None) -> Any:
        """
        C{self.get(key, default)}, without keeping the unpacked mapping
        (one look at a large configuration that is kept afterwards).
        """
        if self._value is not None:
            return self._value.get(key, default)
        return self._unpack().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._unpacked()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._unpacked())

    def __len__(self) -> int:
        return self._length if self._length is not None else len(self._unpacked())

    def __repr__(self) -> str:
        return repr(self._unpacked())


@dataclass(frozen=True)
class StopConfig:
    """
    How a process is stopped: C{signal} to its group, then SIGKILL after
    C{timeout} seconds.
    """

    signal: str = "TERM"
    timeout: float = 10.0


@dataclass(frozen=True)
class RestartConfig:
    """
    Automatic restarts: the policy kind and its C{options}, the attempt cap
    and window, and the pause used by an API restart.
    """

    policy: str = "backoff"
    auto: bool = True
    max_attempts: int = 3
    delay: float = 2.0
    reset_after: float = 60.0
    success_exit_codes: tuple[int, ...] = (0,)
    options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class HealthConfig:
    """
    Health probing of one process.  C{probe} is C{"none"} when the process
    is not probed.  C{url} and C{process} are copied from the process so a
    probe kind needs nothing else; C{env} is the process's own child
    environment (filled in by the supervisor), for probes that run commands.
    """

    probe: str = "none"
    interval: float = 30.0
    timeout: float = 5.0
    failure_threshold: int = 3
    success_threshold: int = 1
    start_period: float = 0.0
    start_interval: float = 1.0
    start_timeout: float = 60.0
    restart_on_unhealthy: bool = True
    history: int = 20
    url: str | None = None
    process: str = ""
    options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    env: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False, repr=False)


@dataclass(frozen=True)
class OutputConfig:
    """
    What happens to a child's stdout and stderr.
    """

    file: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5
    lines: int = 1000
    max_line_bytes: int = 16384
    echo: bool = True
    echo_rate: int = 100


@dataclass(frozen=True)
class Identity:
    """
    Who a child runs as, resolved when the configuration is loaded (so an
    unknown user is a configuration error, and no name service is asked
    on the reactor thread at spawn time).

    @ivar name: the user's login name (for C{initgroups}, C{USER} and
        C{LOGNAME}), or C{None} when only a group was set.
    @ivar uid: the user id, or C{None} (stay root).
    @ivar gid: the primary group id, or C{None}.
    @ivar home: the user's home folder (C{HOME}), or C{None}.
    """

    name: str | None
    uid: int | None
    gid: int | None
    home: str | None = None


@dataclass(frozen=True)
class ProcessConfig:
    """
    One supervised process (one instance of a replicated one).  Paths are
    absolute.

    @ivar depends_on: dependency name -> condition (C{started},
        C{running}, C{healthy}, C{completed_successfully}); iterating it
        gives the names.  A replicated dependency is listed once per
        instance.
    @ivar replicas: the C{replicas} the operator set (C{None}: not
        replicated); C{replica} is this instance's number.
    @ivar user: C{user} and C{group} as written; C{identity} is what they
        resolved to when the configuration was loaded.
    @ivar umask: octal string (C{"027"}), or C{None} to inherit.
    @ivar rlimits: name (L{RLIMIT_NAMES}) -> an integer, C{"unlimited"} or
        C{{soft, hard}}, as written.
    @ivar max_memory: bytes, or C{None} (not checked).
    """

    name: str
    command: tuple[str, ...] = ()
    url: str | None = None
    working_dir: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    inherit_env: bool = True
    env_from_dotenv: tuple[str, ...] = ()
    depends_on: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    groups: tuple[str, ...] = ()
    autostart: bool = True
    replicas: int | None = None
    replica: int | None = field(default=None, compare=False)
    port: int | None = None
    user: str | None = None
    group: str | None = None
    identity: Identity | None = field(default=None, compare=False)
    umask: str | None = None
    rlimits: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    max_memory: int | None = None
    memory_check_interval: float = 5.0
    ready_after: float = 1.0
    stop: StopConfig = field(default_factory=StopConfig)
    restart: RestartConfig = field(default_factory=RestartConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


@dataclass(frozen=True)
class AdminConfig:
    """
    The admin API listener and its protections.
    """

    listen: str = "tcp:8000:interface=127.0.0.1"
    token: str | None = field(default=None, repr=False)
    allow_insecure: bool = False
    default_process: str = "backend"
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    metrics_requires_token: bool = False
    max_body_bytes: int = 65536
    max_json_depth: int = 32
    max_connections: int = 128
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    access_log: bool = False
    max_stream_clients: int = 32
    stream_buffer_bytes: int = 65536
    stream_keepalive: float = 15.0
    stream_stall_timeout: float = 30.0
    stream_max_seconds: float = 3600.0


@dataclass(frozen=True)
class LoggingConfig:
    """
    The orchestrator's own log.
    """

    level: str = "info"
    format: str = "text"
    file: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True)
class MetricsConfig:
    """
    Prometheus exposition options.
    """

    seed_names: bool = True
    health_buckets: tuple[float, ...] = (
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    )


@dataclass(frozen=True)
class NotifierConfig:
    """
    One notifier: its kind, the event types it wants (C{None}: all), its
    kind-specific options, its position in the list, and the environment
    (C{.env} values overlaid by the process environment) to resolve
    secrets such as a webhook's C{secret_env} from.
    """

    type: str
    events: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    index: int = 0
    env: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False, repr=False)


@dataclass(frozen=True)
class Config:
    """
    The whole configuration.

    @ivar path: the configuration file (absolute), or C{None}.
    @ivar sources: JSON path (dotted) -> where its value came from:
        C{default}, C{yaml}, C{.env}, C{env} or C{cli}.
    @ivar dotenv: the values read from the C{.env} file, handed to a child
        only by name through C{env_from_dotenv}.
    @ivar document: the merged, validated document (read-only), for display.
    """

    path: str | None
    enabled: bool = True
    state_dir: str | None = None
    shutdown_timeout: float = 60.0
    max_concurrent_probes: int = 256
    tls: str = "auto"
    admin: AdminConfig = field(default_factory=AdminConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    plugins: tuple[str, ...] = ()
    processes: Mapping[str, ProcessConfig] = field(default_factory=lambda: _EMPTY)
    notifiers: tuple[NotifierConfig, ...] = ()
    sources: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False)
    dotenv: Mapping[str, str] = field(default_factory=lambda: _EMPTY, compare=False, repr=False)
    secret_env: tuple[str, ...] = ()
    document: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False, repr=False)
