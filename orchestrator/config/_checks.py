"""
The checks a configuration gets after merging: JSON Schema validation
(with errors rewritten into operator terms: unknown keys with a
suggestion, unknown kinds with the known ones) and what a schema cannot
express: URLs, executables, dependency cycles, token files and the admin
listener's safety.  Problems are added to the loader's collector, located.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import shutil
import stat
from typing import Any, Mapping
from urllib.parse import urlsplit

from orchestrator.config._fastcheck import surelyValid
from orchestrator.config._read import readText
from orchestrator.config._sizes import parseBytes
from orchestrator.config.schema import selectedBranches
from orchestrator.errors import ConfigError

__all__ = ["validateSchema", "checkSemantics", "listenerProblem", "isHTTPURL", "tcpListenAddress"]


def isHTTPURL(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host")
    parts.port  # raises ValueError for a bad port
    return True


#: The formats checked (the others only annotate): name -> a check raising
#: C{ValueError}.
_FORMATS = {"uri": isHTTPURL}


def _formatChecker():
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    for name, check in _FORMATS.items():
        checker.checks(name, raises=ValueError)(check)
    return checker


def validateSchema(schema: dict, data: dict, problems) -> None:
    """
    Validate once against the master schema; every error goes to
    C{problems}.  A document L{surelyValid} accepts is done without
    importing jsonschema (see L{orchestrator.config._fastcheck}); any
    other is validated by jsonschema, which words every error.
    """
    if surelyValid(schema, data, _FORMATS):
        return
    from orchestrator.config._kindvalidator import KindValidator

    validator = KindValidator(schema, format_checker=_formatChecker())
    for error in validator.iter_errors(data):
        _report(schema, data, error, problems)


def _report(schema, data, error, problems) -> None:
    path = tuple(error.absolute_path)
    if path in problems.settled:
        return  # already reported in the operator's terms (a bad duration)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        instance = error.instance if isinstance(error.instance, dict) else {}
        node = error.schema
        known = set(node.get("properties", {}))
        for branch in selectedBranches(schema, node, instance):
            known |= set(branch.get("properties", {}))
        for key in instance:
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.add(path + (key,), f"unknown key {key!r}{hint}", atKey=True)
        return
    if error.validator == "enum" and path and path[-1] in ("probe", "policy", "type"):
        what = {"probe": "probe kind", "policy": "restart policy", "type": "notifier"}[path[-1]]
        names = ", ".join(str(v) for v in error.validator_value if v is not None)
        problems.add(path, f"unknown {what} {error.instance!r} (known: {names})")
        return
    if error.validator == "format":
        problems.add(path, error.cause.args[0] if error.cause else error.message)
        return
    if error.validator in ("allOf", "anyOf", "oneOf") and error.context:
        for sub in error.context:
            _report(schema, data, sub, problems)
        return
    problems.add(path, error.message)


def checkSemantics(data: dict, baseDir: str, problems, checkExecutables: bool,
                   explicitDefaultProcess: bool = False) -> None:
    """
    The checks a schema cannot express.  Reads the token file into
    C{admin.token}.

    @param explicitDefaultProcess: C{admin.default_process} was set (not
        the schema default), so it must name a configured process.
    """
    for where, _ in _strings(data, ()):
        problems.add(where, "contains a NUL character (\\0)")
    enabled = _getOrDefault(data, ("orchestrator", "enabled"), True) is not False
    processes = data.get("processes") if isinstance(data.get("processes"), dict) else {}
    for name, proc in processes.items():
        if not isinstance(proc, dict):
            continue
        here = ("processes", name)
        command = proc.get("command")
        if enabled and not command:
            problems.add(here, "a managed process needs a command (or set orchestrator.enabled: false)")
        elif enabled and checkExecutables and isinstance(command, list) and command \
                and isinstance(command[0], str):
            _checkExecutable(command[0], baseDir, proc, problems, here + ("command", 0))
        if enabled and isinstance(proc.get("working_dir"), str) and "\0" not in proc["working_dir"]:
            _checkWorkingDir(proc["working_dir"], baseDir, problems, here + ("working_dir",))
        health = proc.get("health") if isinstance(proc.get("health"), dict) else {}
        probe = health.get("probe")
        if not enabled and not proc.get("url") and probe in (None, "none", "http", "tcp"):
            problems.add(here, "monitor-only mode (orchestrator.enabled: false) needs a url to probe")
        elif enabled and not proc.get("url") and (
                probe == "http" or (probe == "tcp" and not health.get("port"))):
            problems.add(here + ("health", "probe"),
                         f"the {probe} probe needs the process's url"
                         + (" (or health.port)" if probe == "tcp" else ""))
        log = proc.get("log") if isinstance(proc.get("log"), dict) else {}
        for key in ("file", "stdout", "stderr"):
            if isinstance(log.get(key), str):
                _checkWritable(log[key], baseDir, problems, here + ("log", key))
                if proc.get("replicas") not in (None, 1) and "{replica}" not in log[key] \
                        and "{port}" not in log[key]:
                    problems.add(here + ("log", key), "every replica would write this one file: "
                                                      "put {replica} in its name")
        if enabled:
            _checkIdentity(proc, problems, here)
            _checkLimits(proc, problems, here)
        _checkPlaceholders(proc, problems, here)
        size = proc.get("max_memory")
        if isinstance(size, str) and not parseBytes(size):
            problems.add(here + ("max_memory",), f"{size!r} is not a memory size above 0 "
                                                 "(bytes, or like 512MiB, 2G)")
        url = proc.get("url")
        if isinstance(url, str):
            port = proc.get("port")
            url = url.replace("{replica}", "0").replace(
                "{port}", str(port) if isinstance(port, int) else "{port}")
            try:
                isHTTPURL(url)
            except ValueError as e:
                problems.add(here + ("url",), str(e))
        deps = proc.get("depends_on", [])
        if isinstance(deps, (list, dict)):
            for i, dep in enumerate(deps):
                if not isinstance(dep, str):
                    continue  # the schema reports its type
                where = here + ("depends_on", dep if isinstance(deps, dict) else i)
                if dep == name:
                    problems.add(where, "a process cannot depend on itself")
                elif dep not in processes:
                    problems.add(where, f"unknown process {dep!r}")
                elif isinstance(deps, dict) and isinstance(deps[dep], dict) \
                        and deps[dep].get("condition") == "healthy" and _probeOf(processes[dep]) == "none":
                    problems.add(where + ("condition",),
                                 f"{dep!r} has no health probe, so it can never be healthy")
    _checkInstanceNames(processes, problems)
    logging = data.get("logging") if isinstance(data.get("logging"), dict) else {}
    if isinstance(logging.get("file"), str):
        _checkWritable(logging["file"], baseDir, problems, ("logging", "file"))
    for where, value in _numbers(data, ()):
        if not math.isfinite(value):
            problems.add(where, f"{value} is not a finite number")
    cycle = _findCycle(processes)
    if cycle:
        problems.add(("processes", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle))
    admin = data.get("admin") if isinstance(data.get("admin"), dict) else {}
    default = admin.get("default_process")
    if explicitDefaultProcess and isinstance(default, str) and default not in processes:
        known = ", ".join(sorted(processes)) or "none configured"
        problems.add(("admin", "default_process"), f"names no configured process {default!r} (known: {known})")
    token = admin.get("token")
    if isinstance(token, str) and token and not token.strip():
        problems.add(("admin", "token"), "the token is only whitespace")
    if admin.get("token") and admin.get("token_file"):
        problems.add(("admin", "token_file"), "set admin.token or admin.token_file, not both")
    tokenFile = admin.get("token_file")
    if isinstance(tokenFile, str) and "\0" not in tokenFile:
        token = _readTokenFile(tokenFile, baseDir, admin.get("allow_insecure") is True,
                               problems, ("admin", "token_file"))
        if token is not None:
            admin["token"] = token
    listen = admin.get("listen")
    if isinstance(listen, str):
        message = listenerProblem(listen, bool(admin.get("token")), admin.get("allow_insecure") is True)
        if message:
            problems.add(("admin", "listen"), message)


def _readTokenFile(tokenFile: str, baseDir: str, allowInsecure: bool, problems, where) -> str | None:
    """
    The token on the first line of C{tokenFile}, read with the file bound;
    a file that others may read is refused unless C{allowInsecure}.
    """
    full = os.path.normpath(os.path.join(baseDir, os.path.expanduser(tokenFile)))
    try:
        text = readText(full, "token")
    except ConfigError as e:
        for message in e.problems:
            problems.add(where, message)
        return None
    mode = stat.S_IMODE(os.stat(full).st_mode)
    if mode & 0o044 and not allowInsecure:
        problems.add(where, f"{full} is readable by group or others (mode {mode:04o}): "
                            "chmod 600 it, or set admin.allow_insecure: true")
    token = text.split("\n", 1)[0].strip()
    if not token:
        problems.add(where, f"{tokenFile!r} is empty or only whitespace")
        return None
    return token


def _checkWorkingDir(workingDir: str, baseDir: str, problems, where) -> None:
    """
    A working folder that is a file is an error; one that does not exist
    yet is a warning, since it may appear later (a mount, a deploy step):
    the start fails, and the restart policy retries it, until it does.
    """
    full = os.path.normpath(os.path.join(baseDir, os.path.expanduser(workingDir)))
    if not os.path.exists(full):
        problems.warn(where, f"folder {full} does not exist (yet): starting fails until it appears")
    elif not os.path.isdir(full):
        problems.add(where, f"{full} is not a folder")


def _strings(value: Any, path: tuple):
    """
    Every key or string value holding a NUL character: a child's argv,
    environment and paths cannot carry one.
    """
    if isinstance(value, dict):
        for key, sub in value.items():
            if isinstance(key, str) and "\0" in key:
                yield path + (key,), key
            yield from _strings(sub, path + (key,))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _strings(sub, path + (i,))
    elif isinstance(value, str) and "\0" in value:
        yield path, value


def _numbers(value: Any, path: tuple):
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _numbers(sub, path + (key,))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _numbers(sub, path + (i,))
    elif isinstance(value, float):
        yield path, value


def _checkWritable(path: str, baseDir: str, problems, where) -> None:
    """
    A log file must be creatable: its folder exists and is writable, or the
    nearest existing ancestor is a writable folder (it will be created).
    """
    if "\0" in path:
        return  # reported as a NUL character
    full = os.path.normpath(os.path.join(baseDir, os.path.expanduser(path)))
    if os.path.isdir(full):
        problems.add(where, f"{full} is a folder, not a file")
        return
    if os.path.exists(full):
        if not os.access(full, os.W_OK):
            problems.add(where, f"cannot write {full}")
        return
    ancestor = os.path.dirname(full)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK | os.X_OK):
        problems.add(where, f"cannot create {full}: {ancestor} is not a writable folder")


def _getOrDefault(data, path, default):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _checkExecutable(executable: str, baseDir: str, proc: dict, problems, where) -> None:
    if "\0" in executable:
        return  # reported as a NUL character
    if os.sep in executable:
        candidate = os.path.normpath(os.path.join(baseDir, executable))
        if not os.path.exists(candidate):
            problems.add(where, f"command not found: {candidate}")
        elif os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
            problems.add(where, f"command is not executable: {candidate}")
    else:
        searchPath = (proc.get("env") or {}).get("PATH") or os.environ.get("PATH", os.defpath)
        if shutil.which(executable, path=searchPath) is None:
            problems.add(where, f"command not found on PATH: {executable!r} (PATH={searchPath})")


def _probeOf(proc: Any) -> str | None:
    health = proc.get("health") if isinstance(proc, dict) else None
    return health.get("probe", "none") if isinstance(health, dict) else "none"


def _checkIdentity(proc: dict, problems, here: tuple) -> None:
    """
    C{user} and C{group} need root and must name a known user and group:
    said at load, never found out at spawn time.
    """
    from orchestrator.config._build import resolveIdentity

    user, group = proc.get("user"), proc.get("group")
    if user is None and group is None:
        return
    if os.geteuid() != 0:
        key = "user" if user is not None else "group"
        problems.add(here + (key,), "needs the orchestrator to run as root")
        return
    for key, value in (("user", user), ("group", group)):
        if value is None or isinstance(value, bool):
            continue
        try:
            resolveIdentity(value if key == "user" else None, value if key == "group" else None)
        except KeyError as e:
            problems.add(here + (key,), e.args[0])


def _checkLimits(proc: dict, problems, here: tuple) -> None:
    """
    Only root may raise a hard limit: without root, a hard limit above the
    orchestrator's own is an error at load, not a child failing at spawn.
    """
    limits = proc.get("rlimits")
    if not isinstance(limits, dict) or os.geteuid() == 0:
        return
    import resource

    for name, value in limits.items():
        number = getattr(resource, "RLIMIT_" + str(name).upper(), None)
        if number is None:
            continue  # the schema reports an unknown name
        hard = value.get("hard") if isinstance(value, dict) else value
        current = resource.getrlimit(number)[1]
        wanted = resource.RLIM_INFINITY if hard == "unlimited" else hard
        if isinstance(wanted, int) and current != resource.RLIM_INFINITY and (
                wanted == resource.RLIM_INFINITY or wanted > current):
            problems.add(here + ("rlimits", name),
                         f"raising the hard limit above {current} needs the orchestrator to run as root")


def _checkPlaceholders(proc: dict, problems, here: tuple) -> None:
    """
    C{{port}} means nothing without a C{port} key: an error, not a
    literal brace in a command line.
    """
    if proc.get("port") is not None:
        return
    command = proc.get("command") if isinstance(proc.get("command"), list) else []
    env = proc.get("env") if isinstance(proc.get("env"), dict) else {}
    places = [(("command", i), w) for i, w in enumerate(command)]
    places += [(("env", k), v) for k, v in env.items()]
    places += [(("url",), proc.get("url")), (("working_dir",), proc.get("working_dir"))]
    for where, value in places:
        if isinstance(value, str) and "{port}" in value:
            problems.add(here + where, "uses {port} but the process sets no port")


def _checkInstanceNames(processes: Mapping[str, Any], problems) -> None:
    """
    The names C{replicas} makes (C{NAME-0} ...) must not collide with
    another process's name.
    """
    owners: dict[str, str] = {}
    for name, proc in processes.items():
        replicas = proc.get("replicas") if isinstance(proc, dict) else None
        if isinstance(replicas, int) and not isinstance(replicas, bool) and replicas > 0:
            names = [f"{name}-{i}" for i in range(min(replicas, 1000))]
        else:
            names = [name]
        for instance in names:
            if instance in owners and owners[instance] != name:
                problems.add(("processes", name, "replicas") if len(names) > 1 or instance != name
                             else ("processes", name),
                             f"instance name {instance!r} collides with process {owners[instance]!r}")
            owners.setdefault(instance, name)


def _findCycle(processes: Mapping[str, Any]) -> list[str] | None:
    graph = {
        name: [d for d in (p.get("depends_on") or [])
               if isinstance(d, str) and d in processes and d != name]
        if isinstance(p, dict) and isinstance(p.get("depends_on"), (list, dict)) else []
        for name, p in processes.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for name in graph:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def listenerProblem(listen: str, hasToken: bool, allowInsecure: bool) -> str | None:
    """
    Check an admin endpoint string: it must parse, and a TCP listener off
    the loopback interface needs a token (or an explicit
    C{allow_insecure}).

    @return: the problem, or C{None}.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        # Constructing an endpoint only records its arguments; no reactor
        # is touched, so None stands in for it.
        endpoint = serverFromString(None, listen)
    except (ValueError, TypeError, KeyError) as e:
        return f"not a valid Twisted endpoint string {listen!r}: {e}"
    except Exception as e:  # an ssl: endpoint whose files cannot be read
        return f"cannot use endpoint {listen!r}: {e}"
    address = tcpListenAddress(listen)
    if address is None:  # unix sockets and other non-TCP endpoints
        return None
    interface = address[0]
    if _isLoopback(interface) or hasToken or allowInsecure:
        return None
    shown = interface or "all interfaces"
    return (
        f"listening on {shown} needs admin.token (or env ORCHESTRATOR_ADMIN_TOKEN); "
        "set admin.allow_insecure: true to accept the risk"
    )


def _isLoopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tcpListenAddress(listen: str) -> tuple[str, int] | None:
    """
    The C{(interface, port)} a TCP server endpoint string binds (C{""}:
    all interfaces), or C{None} for any other endpoint (a unix socket).

    The string is parsed by Twisted itself (C{serverFromString}, so
    escapes and C{port=} forms mean what they mean to the listener), but
    Twisted offers no public accessor for what it parsed: this is the one
    place that reads the endpoint's private C{_interface} and C{_port}; an
    endpoint without them counts as not TCP.
    """
    from twisted.internet.endpoints import serverFromString

    try:
        endpoint = serverFromString(None, listen)
    except Exception:
        return None
    interface, port = getattr(endpoint, "_interface", None), getattr(endpoint, "_port", None)
    if interface is None or not isinstance(port, int):
        return None
    return interface, port
