"""
What the three export targets share: reading the configuration through the
normal loader, one view per process that also reads the keys other parts
of the project add to the schema over time, and the "not exported" report.

The report is mechanical, so nothing is dropped silently: each target marks
the configuration paths it mapped (L{Coverage.used}) or knowingly could not
map (L{Coverage.skip}, with a reason); every other setting the operator
wrote (any source but the schema's defaults) is reported as having no
equivalent.  A key added to the schema later is therefore reported until a
target learns to map it.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import yaml

from orchestrator.config._sizes import parseBytes
from orchestrator.config.load import dottedPath, loadConfig
from orchestrator.config.types import Config, ProcessConfig, thaw

__all__ = [
    "NotExported",
    "Coverage",
    "ProcessView",
    "Export",
    "loadForExport",
    "processViews",
    "isSecretName",
    "parseBytes",
    "wholeSeconds",
    "goDuration",
    "dumpYAML",
    "commentLines",
    "ORCHESTRATOR_SECTIONS",
    "Probe",
    "readProbe",
]

#: Top-level sections that configure the orchestrator itself; no target
#: runs an orchestrator, so non-default values here are reported once.
ORCHESTRATOR_SECTIONS = ("orchestrator", "admin", "logging", "metrics", "plugins", "notifiers")

#: Literal C{env} names that look like credentials; they go to the
#: generated secret (Kubernetes C{Secret}, compose interpolation, systemd
#: C{EnvironmentFile=}) rather than into the manifest in clear.
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY)",
                          re.IGNORECASE)

def isSecretName(name: str) -> bool:
    """
    Whether a literal environment variable's name says it holds a secret.
    """
    return bool(_SECRET_NAME.search(name))


def wholeSeconds(seconds: float, minimum: int = 1) -> int:
    """
    Round seconds up to a whole number, never below C{minimum}: engines
    that count whole seconds probe at most as often as configured.
    """
    return max(minimum, int(math.ceil(seconds - 1e-9)))


def goDuration(seconds: float) -> str:
    """
    A Go-style duration (C{"30s"}, C{"1m30s"}, C{"500ms"}), as compose
    expects them.
    """
    millis = int(round(seconds * 1000))
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    minutes, secs = divmod(whole, 60)
    if minutes and secs:
        return f"{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def loadForExport(path: str, envFile: str | None = None) -> Config:
    """
    Load a configuration exactly as C{twistd orchestrator} would, except
    that commands need not exist on this host (they run in an image or on
    another machine).

    @raise orchestrator.errors.ConfigError: with every located problem.
    """
    return loadConfig(path, envFile=envFile, checkExecutables=False).config


@dataclass(frozen=True, order=True)
class NotExported:
    """
    One setting a target has no equivalent for.

    @ivar path: its dotted configuration path.
    @ivar value: the configured value (for the report).
    @ivar why: what the target does instead, or why it cannot.
    """

    path: str
    value: Any = field(compare=False)
    why: str = field(compare=False)

    def line(self) -> str:
        value = self.value
        if isinstance(value, (dict, list)):
            value = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
        return f"{self.path} ({value}): {self.why}"


def _leaves(value: Any, path: tuple) -> Iterator[tuple[tuple, Any]]:
    # Exactly the loader's notion of a leaf, so paths match Config.sources.
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, path + (key,))
    else:
        yield path, value


class Coverage:
    """
    Which settings a target mapped, and the report of the rest.
    """

    def __init__(self, config: Config, target: str) -> None:
        self._config = config
        self._target = target
        self._document = thaw(config.document)
        self._used: set[tuple] = set()
        self._skipped: dict[tuple, NotExported] = {}

    def value(self, path: tuple) -> Any:
        node: Any = self._document
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def setByOperator(self, path: tuple) -> bool:
        """
        Whether a value comes from the file, C{.env}, the environment or
        the command line rather than the schema's defaults.
        """
        return self._config.sources.get(dottedPath(path), "default") != "default"

    def anySetByOperator(self, prefix: tuple) -> bool:
        """
        Whether any setting at or below C{prefix} was set by the operator.
        """
        return any(self.setByOperator(path) for path, _ in _leaves(self.value(prefix), prefix))

    def used(self, *paths: tuple) -> None:
        """
        Mark paths (and everything below them) as mapped.
        """
        self._used.update(paths)

    def skip(self, path: tuple, why: str, value: Any = None) -> None:
        """
        Report a setting (even a default one) as not exported, with why.
        """
        self._skipped[path] = NotExported(dottedPath(path), value if value is not None else self.value(path), why)

    def _covered(self, path: tuple) -> bool:
        return any(path[:n] in self._used or path[:n] in self._skipped for n in range(1, len(path) + 1))

    def report(self, prefix: tuple) -> list[NotExported]:
        """
        Everything under C{prefix} not exported: explicit skips, then every
        non-default setting that was neither mapped nor skipped.
        """
        out = [n for p, n in self._skipped.items() if p[:len(prefix)] == prefix]
        sources = self._config.sources
        for path, value in _leaves(self.value(prefix), prefix):
            if self._covered(path):
                continue
            if sources.get(dottedPath(path), "default") == "default":
                continue
            out.append(NotExported(dottedPath(path), value, f"no {self._target} equivalent"))
        return sorted(out)

    def orchestratorReport(self) -> list[NotExported]:
        """
        The orchestrator's own sections: each one set away from its
        defaults is one line.
        """
        out = []
        for section in ORCHESTRATOR_SECTIONS:
            path = (section,)
            if self._covered(path):
                continue
            changed = [p for p, _ in _leaves(self.value(path), path)
                       if self._config.sources.get(dottedPath(p), "default") != "default"]
            if changed:
                out.append(NotExported(section, ", ".join(dottedPath(p) for p in changed),
                                       f"configures the orchestrator itself; {self._target} "
                                       "runs the processes without one"))
        return out


@dataclass(frozen=True)
class ProcessView:
    """
    One process as the exporters read it: the typed L{ProcessConfig}, its
    validated document, and the optional keys other features add
    (C{replicas}, C{port}, C{user}, C{group}, C{umask}, C{rlimits},
    C{max_memory}, C{depends_on} conditions), read whether or not the
    schema has them yet.
    """

    name: str
    proc: ProcessConfig
    raw: Mapping[str, Any]
    baseDir: str

    @property
    def path(self) -> tuple:
        return ("processes", self.name)

    def option(self, key: str, default: Any = None) -> Any:
        """
        A process key from the typed config if it has the attribute, else
        from the document.
        """
        value = getattr(self.proc, key, None)
        if value is None or (isinstance(value, Mapping) and not value):
            value = self.raw.get(key) or None  # an empty mapping is the default: unset
        return default if value is None else thaw(value)

    @property
    def command(self) -> list[str]:
        """
        The argv: a bare program name stays bare (looked up in the target's
        C{PATH}), a path is the absolute one the orchestrator would run.
        """
        written = list(self.raw.get("command") or ())
        resolved = list(self.proc.command)
        if written and "/" not in written[0]:
            resolved[0] = written[0]
        return resolved

    @property
    def workingDir(self) -> str | None:
        """
        The working directory the operator set (absolute), or C{None}.
        """
        return self.proc.working_dir if self.raw.get("working_dir") else None

    @property
    def replicas(self) -> int:
        value = self.option("replicas", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) else 1

    @property
    def port(self) -> int | None:
        """
        The process's port: its C{port} key, else the port of its C{url}.
        """
        from urllib.parse import urlsplit

        port = self.option("port")
        if isinstance(port, int) and not isinstance(port, bool):
            return port
        url = self.proc.url
        if not url:
            return None
        try:
            parts = urlsplit(url)
            return parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None

    @property
    def dependencies(self) -> dict[str, str]:
        """
        C{depends_on} as name -> condition (a plain list means C{running}).
        """
        value = self.raw.get("depends_on")
        if value is None:
            value = self.proc.depends_on
        if isinstance(value, Mapping):
            out = {}
            for name, spec in value.items():
                condition = spec.get("condition") if isinstance(spec, Mapping) else spec
                out[str(name)] = condition if isinstance(condition, str) else "running"
            return out
        return {str(name): "running" for name in value or ()}

    def environment(self, dotenv: Mapping[str, str]) -> list[tuple[str, str, bool]]:
        """
        The child's explicit environment as C{(name, value, secret)}:
        literal C{env} values (secret when the name looks like one), then
        the C{env_from_dotenv} names with their C{.env} values (always
        secret).
        """
        out = [(k, str(v), isSecretName(k)) for k, v in self.proc.env.items()]
        literal = set(self.proc.env)
        for name in self.proc.env_from_dotenv:
            if name not in literal:
                out.append((name, dotenv.get(name, ""), True))
        return out


@dataclass(frozen=True)
class Probe:
    """
    A built-in probe as the targets need it.

    @ivar kind: C{"http"}, C{"tcp"} or C{"exec"}.
    @ivar url: for http, the full URL requested (C{url} + C{path}).
    @ivar shell: for an exec probe with C{shell: true}, the command string
        (C{argv} is then C{/bin/sh -c COMMAND}).
    """

    kind: str
    scheme: str = "http"
    host: str | None = None
    port: int | None = None
    path: str = "/"
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    shell: str | None = None


def readProbe(view: ProcessView, coverage: Coverage, engine: str) -> Probe | None:
    """
    The process's probe, marking what the target's probe can express and
    reporting what it cannot (status ranges, body and JSON checks, a
    custom kind); C{None} without a probe or for a custom kind.
    """
    from urllib.parse import urlsplit

    health = view.proc.health
    hp = view.path + ("health",)
    options = health.options
    coverage.used(hp + ("probe",))
    if health.probe == "exec":
        coverage.used(hp + ("command",), hp + ("shell",), hp + ("max_output_bytes",))
        command = options["command"]
        if options.get("shell"):
            text = command if isinstance(command, str) else shlex.join(command)
            return Probe("exec", argv=("/bin/sh", "-c", text), shell=text)
        return Probe("exec", argv=tuple(shlex.split(command) if isinstance(command, str) else command))
    if health.probe not in ("http", "tcp"):
        if health.probe != "none":
            coverage.skip(hp + ("probe",), f"custom probe kind {health.probe!r}: {engine} cannot run it, "
                          "so no probe is exported")
        return None
    coverage.used(view.path + ("url",))
    parts = urlsplit(health.url or "")
    defaultPort = 443 if parts.scheme == "https" else 80
    if health.probe == "tcp":
        coverage.used(hp + ("host",), hp + ("port",))
        return Probe("tcp", host=options.get("host") or parts.hostname,
                     port=options.get("port") or parts.port or defaultPort)
    # The size bounds protect the orchestrator's own client; the targets' probes have theirs.
    coverage.used(hp + ("path",), hp + ("headers",), hp + ("follow_redirects",), hp + ("max_body_bytes",),
                  hp + ("max_header_bytes",), hp + ("max_headers",))
    if list(options.get("expect_status", ["200-399"])) != ["200-399"]:
        coverage.skip(hp + ("expect_status",), f"{engine} accepts any status from 200 to 399")
    for key in ("expect_body", "expect_json"):
        if options.get(key) is not None:
            coverage.skip(hp + (key,), f"{engine} looks at the status only")
    path = "/" + options.get("path", "/health").lstrip("/")
    return Probe("http", scheme=parts.scheme or "http", host=parts.hostname, port=parts.port or defaultPort,
                 path=path, url=(health.url or "").rstrip("/") + path,
                 headers=dict(options.get("headers") or {}))


def processViews(config: Config) -> list[ProcessView]:
    """
    The configured processes as the operator named them, in the order of
    the file.  Should the loader expand C{replicas: N} into C{NAME-0} ...
    C{NAME-(N-1)}, the first instance stands for the process (each target
    expresses the replicas its own way).
    """
    import os

    document = thaw(config.document).get("processes") or {}
    baseDir = os.path.dirname(config.path) if config.path else os.getcwd()
    views = []
    for name, raw in document.items():
        proc = config.processes.get(name) or config.processes.get(f"{name}-0")
        if proc is not None:
            views.append(ProcessView(name, proc, raw or {}, baseDir))
    return views


@dataclass
class Export:
    """
    The result of one export: the files to write (name -> text; C{"-"} is
    standard output or C{-o FILE}), every setting that was not exported,
    and the mode of files that must stay private.
    """

    files: dict[str, str] = field(default_factory=dict)
    notExported: list[NotExported] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)


def commentLines(notes: Iterable[NotExported], marker: str = "#") -> str:
    """
    The report as comment lines for a YAML document or a unit file.
    """
    return "".join(f"{marker} not exported: {note.line()}\n" for note in notes)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:
        return True  # shared probe handlers are written out, not as &anchors


def _multiline(dumper, text: str):
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _multiline)


def dumpYAML(document: Any) -> str:
    """
    Block-style YAML in insertion order, multi-line strings as literals.
    """
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=10**6)


def writeExport(result: Export, output: str | None, stdout, stderr, directory: bool = False) -> list[str]:
    """
    Write an export and report what was not exported on C{stderr}.

    @param output: a file (or, with C{directory}, a folder) to write to;
        C{None} writes the C{"-"} text to C{stdout}.
    @return: the paths written.
    """
    import os

    written = []
    if directory:
        os.makedirs(output, exist_ok=True)
        for name, text in result.files.items():
            path = os.path.join(output, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, result.modes.get(name, 0o644))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(path, result.modes.get(name, 0o644))
            written.append(path)
    elif output is not None and output != "-":
        # Inlined secrets make the file private (mode 0600).
        mode = result.modes.get("-", 0o644)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(result.files["-"])
        os.chmod(output, mode)
        written.append(output)
    else:
        stdout.write(result.files["-"])
    for note in result.notExported:
        stderr.write(f"not exported: {note.line()}\n")
    return written
