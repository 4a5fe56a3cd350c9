"""
The admin API's routes: the seed's C{/api/v1/admin/backend/*} contract,
the per-process routes, reload, events, the OpenAPI document, plugin
resources and C{/metrics}, as a twisted.web resource tree.

Handlers only translate HTTP to the core and back: the core serialises
commands on a process (a restart racing a stop is the core's business),
L{orchestrator.web.views} shapes the JSON, L{orchestrator.web.security}
guards the door.  The API acts on configured processes only and takes no
command, path, URL or environment from a request.
"""

from __future__ import annotations

import signal as _signal

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.web.resource import IResource

from orchestrator.errors import ConfigError, SpawnError, StartFailed, StateError
from orchestrator.hooks.call import callHook
from orchestrator.notify.events import EVENT_TYPES
from orchestrator.web import views
from orchestrator.web._params import jsonObject, queryBool, queryChoice, queryInt, queryText
from orchestrator.web._render import Answer, ApiError, ApiResource, ErrorResource, jsonText
from orchestrator.web.security import Guard

__all__ = ["buildRoot", "buildTree", "runCommand", "runOnMany", "parseSignal", "COMMANDS", "SIGNALS", "SIGNAL_NUMBERS"]

_log = Logger()

#: The commands a process takes through the API.
COMMANDS = ("start", "stop", "restart")

#: The largest C{lines} a logs request may ask for.
MAX_LOG_LINES = 100_000

#: The most events one C{GET /api/v1/events} answers with.
MAX_EVENTS = 1000

#: The signals C{POST /api/v1/processes/{name}/signal} sends: the ones
#: programs use as orders (reload, reopen logs, dump state, scale
#: workers, stop gracefully).  C{KILL} is refused (use stop: it kills the
#: whole group after C{stop.timeout} and is recorded as a stop, not a
#: crash), and so are C{STOP}/C{TSTP} (a frozen child fails its probes
#: and is restarted, a surprise) and anything the supervisor relies on
#: (C{CHLD}).
SIGNALS = ("HUP", "INT", "QUIT", "ABRT", "USR1", "USR2", "ALRM", "TERM", "CONT",
           "WINCH", "TTIN", "TTOU", "URG", "IO", "PWR")

#: The allowed signals this host has, by number (what the OpenAPI
#: document lists: C{PWR} is Linux's).
SIGNAL_NUMBERS = {int(getattr(_signal, "SIG" + n)): n for n in SIGNALS if hasattr(_signal, "SIG" + n)}

#: Where a signal goes: the child's whole process group, or the child alone.
SIGNAL_TARGETS = ("group", "process")


def lookupProcess(orchestrator, name: str, what: str = ""):
    """
    @raise ApiError: 404, no configured process has that name.
    """
    process = orchestrator.processes.get(name)
    if process is None:
        raise ApiError(404, f"no process named {name!r}{what}")
    return process


# -- commands ------------------------------------------------------------------------


def runCommand(orchestrator, name: str, verb: str, wait: bool, what: str = "") -> Deferred:
    """
    Start, stop or restart a process and describe the outcome: the one
    renderer of the seed's routes and the per-process ones.

    With C{wait}, the answer comes once the command is done (a start or a
    restart once the process is ready or failed to become ready).  Without,
    it comes at once: the outcome if the command finished immediately,
    else a 202 with the current status while the command goes on.

    @return: a Deferred firing with an L{Answer}, or failing with
        L{ApiError} (409 refused state change, 500 failed start).
    """
    process = lookupProcess(orchestrator, name, what)
    wasAlive, pidBefore = process.isAlive, process.pid
    if verb == "start":
        d = process.start(wait=wait)
    elif verb == "restart":
        d = process.restart(wait=wait)
    else:
        d = process.stop()
    settled: list[bool] = []
    d.addBoth(lambda result: settled.append(True) or result)
    if not wait and not settled:  # (d.called is no help: the lock's Deferred may be paused)
        d.addErrback(_failedInBackground, name, verb)
        return succeed(Answer(_commandBody(
            process.snapshot(), f"{views.label(name)} {verb} requested"), 202))

    def done(snapshot):
        return Answer(_commandBody(snapshot, _message(verb, name, wasAlive, pidBefore, snapshot)))

    def failed(failure):
        error = failure.value
        if failure.check(StateError):
            raise ApiError(409, str(error))
        if failure.check(SpawnError, StartFailed):
            # The seed says "Failed to start <name>: <why>".
            why = error.reason if failure.check(StartFailed) else str(error)
            extra = views.processStatus(process.snapshot())
            extra["output"] = list(getattr(error, "output", ()))
            raise ApiError(500, f"Failed to {verb} {name}: {why}", extra=extra)
        return failure

    return d.addCallbacks(done, failed)


def _commandBody(snapshot, message: str) -> dict:
    return {"success": True, "message": message, **views.processStatus(snapshot)}


def _message(verb: str, name: str, wasAlive: bool, pidBefore, snapshot) -> str:
    who = views.label(name)
    if verb == "start":
        if wasAlive and snapshot.pid == pidBefore:
            return f"{who} is already running"
        if snapshot.status == "starting":
            return f"{who} is starting"
        return f"{who} started successfully"
    if verb == "stop":
        return f"{who} stopped successfully" if wasAlive else f"{who} is already stopped"
    return f"{who} restarted successfully"


def _failedInBackground(failure, name: str, verb: str) -> None:
    _log.error("admin API: {verb} {process} (not waited for) failed: {why}",
               verb=verb, process=name, why=failure.getErrorMessage())


class _ProcessRoute(ApiResource):
    """
    A route about one configured process, looked up per request (a reload
    may remove it): 404 when it is gone.

    @ivar _what: added to the 404 message (the seed's routes name the
        setting that chose the process).
    """

    def __init__(self, orchestrator, name: str, what: str = "") -> None:
        super().__init__()
        self._orchestrator = orchestrator
        self._name = name
        self._what = what

    def process(self):
        return lookupProcess(self._orchestrator, self._name, self._what)


class _Command(_ProcessRoute):
    """
    C{POST}: one command on one process.  C{?wait=false} (or the body
    C{{"wait": false}}) answers without waiting for readiness.
    """

    def __init__(self, orchestrator, name: str, verb: str, what: str = "") -> None:
        super().__init__(orchestrator, name, what)
        self._verb = verb

    def POST(self, request):
        wait = queryBool(request, "wait", True)
        wait = jsonObject(request, {"wait": bool}).get("wait", wait)
        return runCommand(self._orchestrator, self._name, self._verb, wait, self._what)


def parseSignal(value) -> str:
    """
    A signal as the API takes it: a name in L{SIGNALS} (C{"USR1"} or
    C{"SIGUSR1"}) or its number.

    @return: the name without C{SIG}.
    @raise ApiError: 400, anything else (with the list of allowed ones).
    """
    allowed = ", ".join(SIGNAL_NUMBERS.values())
    if isinstance(value, int) and not isinstance(value, bool):
        if value in SIGNAL_NUMBERS:
            return SIGNAL_NUMBERS[value]
    elif isinstance(value, str):
        name = value[3:] if value.startswith("SIG") else value
        if name in SIGNAL_NUMBERS.values():
            return name
    else:
        raise ApiError(400, f"field 'signal' must be a signal name or number, not {type(value).__name__}")
    why = (" (KILL: use stop, which ends the whole group after stop.timeout)"
           if str(value).removeprefix("SIG") in ("KILL", "9") else "")
    raise ApiError(400, f"unknown or refused signal {value!r}{why}; allowed: {allowed} "
                        "(with or without SIG, or their numbers)")


class _Signal(_ProcessRoute):
    """
    C{POST {"signal": "USR1", "to": "group"|"process"}}: send a signal to
    a running process (its whole group by default), and nothing else.
    """

    def POST(self, request):
        body = jsonObject(request, {"signal": object, "to": str})
        if "signal" not in body:
            raise ApiError(400, "the request body needs a 'signal' field (e.g. {\"signal\": \"USR1\"})")
        name = parseSignal(body["signal"])
        to = body.get("to", "group")
        if to not in SIGNAL_TARGETS:
            raise ApiError(400, f"field 'to' must be one of {', '.join(SIGNAL_TARGETS)}, not {to!r}")
        process = self.process()
        try:
            snapshot = process.sendSignal(int(getattr(_signal, "SIG" + name)), toGroup=(to == "group"))
        except StateError as e:
            raise ApiError(409, str(e))
        target = "process group" if to == "group" else "process"
        return {"success": True, "message": f"SIG{name} sent to {views.label(self._name)}'s {target}",
                "signal": name, "to": to, **views.processStatus(snapshot)}


def runOnMany(orchestrator, names: list[str], verb: str) -> Deferred:
    """
    Start, stop or restart several processes in dependency order (a
    start or restart rank by rank, dependencies first; a stop the other
    way round), each rank at once, each waiting until done.  A process
    whose dependency failed here is not started.

    @return: a Deferred firing with the answer: C{success} (all of them
        succeeded), a C{message}, and C{processes}, each one's outcome in
        the order they were acted on.
    """
    from orchestrator.supervision.supervisor import dependencyRanks

    processes = orchestrator.processes
    ranks = dependencyRanks({n: p.config for n, p in processes.items()})
    chosen = [n for n in processes if n in set(names)]
    order = sorted({ranks[n] for n in chosen}, reverse=(verb == "stop"))
    outcomes: dict[str, dict] = {}
    failed: set[str] = set()

    def one(name: str) -> Deferred:
        process = orchestrator.processes.get(name)  # (a reload may have removed it meanwhile)
        if process is None:
            failed.add(name)
            outcomes[name] = {"name": name, "success": False,
                              "error": f"no process named {name!r} any more (removed by a reload)"}
            return succeed(None)
        blockers = [] if verb == "stop" else [d for d in process.config.depends_on if d in failed]
        if blockers:
            failed.add(name)
            outcomes[name] = {"name": name, "success": False,
                              "error": f"not {verb}ed: its dependency {blockers[0]} failed",
                              **views.processStatus(process.snapshot())}
            return succeed(None)

        def done(answer):
            outcomes[name] = {"name": name, **answer.body}

        def refused(failure):
            failure.trap(ApiError)
            failed.add(name)
            outcomes[name] = {"name": name, **views.processStatus(process.snapshot()),
                              **failure.value.answer().body}

        return runCommand(orchestrator, name, verb, wait=True).addCallbacks(done, refused)

    d = succeed(None)
    for rank in order:
        members = [n for n in chosen if ranks[n] == rank]
        d.addCallback(lambda _, members=members: DeferredList(
            [one(n) for n in members], fireOnOneErrback=True, consumeErrors=True))

    def answer(_):
        results = [outcomes[n] for rank in order for n in chosen if ranks[n] == rank]
        bad = [r["name"] for r in results if not r["success"]]
        message = (f"{verb}: {len(results) - len(bad)} of {len(results)} succeeded"
                   + (f"; failed: {', '.join(bad)}" if bad else ""))
        return {"success": not bad, "message": message, "processes": results}

    return d.addCallback(answer)


class _CommandOnAll(ApiResource):
    """
    C{POST /api/v1/processes/start|stop|restart}: every process, in
    dependency order (see L{runOnMany}).
    """

    def __init__(self, orchestrator, verb: str) -> None:
        super().__init__()
        self._orchestrator = orchestrator
        self._verb = verb

    def POST(self, request):
        jsonObject(request, {})
        return runOnMany(self._orchestrator, list(self._orchestrator.processes), self._verb)


def groupMembers(orchestrator) -> dict[str, list[str]]:
    """
    Each group (sorted by name) and its members, in configuration order.
    """
    groups: dict[str, list[str]] = {}
    for name, process in orchestrator.processes.items():
        for group in process.config.groups:
            groups.setdefault(group, []).append(name)
    return dict(sorted(groups.items()))


class _Groups(ApiResource):
    """
    C{GET /api/v1/groups}: every group and its members; its children are
    the groups by name.
    """

    def __init__(self, orchestrator) -> None:
        super().__init__()
        self._orchestrator = orchestrator

    def getChild(self, path: bytes, request):
        if path == b"" and not request.postpath:
            return self
        name = path.decode("utf-8", "replace")
        if name not in groupMembers(self._orchestrator):
            return ErrorResource(ApiError(404, f"no group named {name!r} (no process lists it in groups)"))
        return _Group(self._orchestrator, name)

    def GET(self, request):
        return {"groups": [{"name": name, "processes": members}
                           for name, members in groupMembers(self._orchestrator).items()]}


def _members(orchestrator, group: str) -> list[str]:
    """
    @raise ApiError: 404, no process lists C{group} (any more: a reload
        may have removed it).
    """
    members = groupMembers(orchestrator).get(group)
    if not members:
        raise ApiError(404, f"no group named {group!r} (no process lists it in groups)")
    return members


class _Group(ApiResource):
    """
    C{GET /api/v1/groups/{group}}: its members' status.
    """

    def __init__(self, orchestrator, group: str) -> None:
        super().__init__()
        self._orchestrator = orchestrator
        self._group = group
        for verb in COMMANDS:
            self.putChild(verb.encode(), _GroupCommand(orchestrator, group, verb))

    def GET(self, request):
        processes = self._orchestrator.processes
        return {"name": self._group, "processes": [
            views.processStatus(processes[n].snapshot()) for n in _members(self._orchestrator, self._group)]}


class _GroupCommand(ApiResource):
    """
    C{POST /api/v1/groups/{group}/start|stop|restart}: on its members, in
    dependency order (see L{runOnMany}).
    """

    def __init__(self, orchestrator, group: str, verb: str) -> None:
        super().__init__()
        self._orchestrator = orchestrator
        self._group = group
        self._verb = verb

    def POST(self, request):
        jsonObject(request, {})
        members = _members(self._orchestrator, self._group)
        return runOnMany(self._orchestrator, members, self._verb).addCallback(
            lambda answer: {**answer, "group": self._group})


# -- reading state ---------------------------------------------------------------------


class _Status(_ProcessRoute):
    """
    C{GET}: a process's status (the seed's C{status} answer and more),
    encoded once per change (L{views.StatusCache}).
    """

    def __init__(self, orchestrator, name: str, what: str = "", cache=None) -> None:
        super().__init__(orchestrator, name, what)
        self._cache = cache if cache is not None else views.StatusCache()

    def GET(self, request):
        return self._cache.encoded(self.process()) + b"\n"


class _SeedHealth(_ProcessRoute):
    """
    C{GET}: the seed's C{/api/v1/admin/backend/health}.
    """

    def GET(self, request):
        return views.seedHealth(self._orchestrator.config, self.process())


class _Logs(_ProcessRoute):
    """
    C{GET ?lines=N}: the last N lines a process wrote (100 by default).
    """

    def GET(self, request):
        lines = queryInt(request, "lines", 100, 0, MAX_LOG_LINES)
        tail = self.process().output.tail(lines)
        return {"name": self._name, "count": len(tail), "lines": [line.toJSON() for line in tail]}


class _Health(_ProcessRoute):
    """
    C{GET ?limit=N}: a process's last N probe results and counters.
    """

    def GET(self, request):
        limit = queryInt(request, "limit", None, 0, MAX_LOG_LINES)
        return views.healthDetail(self.process(), limit)


#: The command routes under a process, by path segment.
_COMMAND_PATHS = {verb.encode(): verb for verb in COMMANDS}

#: Its other routes: path segment -> how a L{_Process} makes it.
_PROCESS_ROUTES = {
    b"status": lambda process: _Status(process._orchestrator, process._name, cache=process._cache),
    b"health": lambda process: _Health(process._orchestrator, process._name),
    b"signal": lambda process: _Signal(process._orchestrator, process._name),
    b"logs": lambda process: process._logs(),
}


class _Process(_Status):
    """
    C{/api/v1/processes/{name}}: its status, and its command and detail routes.
    """

    #: The path segments of its routes (each made by L{getChild}).
    ROUTES = (*_COMMAND_PATHS, *_PROCESS_ROUTES)

    def __init__(self, orchestrator, name: str, stream=None, cache=None) -> None:
        super().__init__(orchestrator, name, cache=cache)
        self._stream = stream

    def getChild(self, path: bytes, request):
        # Made for the one route asked (this resource is made per request:
        # a status answer needs none of them).
        verb = _COMMAND_PATHS.get(path)
        if verb is not None:
            return _Command(self._orchestrator, self._name, verb)
        make = _PROCESS_ROUTES.get(path)
        return make(self) if make is not None else super().getChild(path, request)

    def _logs(self) -> _Logs:
        logs = _Logs(self._orchestrator, self._name)
        if self._stream is not None:
            logs.putChild(b"stream", self._stream(self.process))
        return logs


class _Processes(ApiResource):
    """
    C{GET /api/v1/processes}: every configured process; its children are
    the configured processes by name.
    """

    def __init__(self, orchestrator, defaultProcess: str, logStream=None, cache=None) -> None:
        super().__init__()
        self._orchestrator = orchestrator
        self._default = defaultProcess
        self._logStream = logStream
        self._onAll = {verb: _CommandOnAll(orchestrator, verb) for verb in COMMANDS}
        self._cache = cache if cache is not None else views.StatusCache()

    def getChild(self, path: bytes, request):
        if path == b"" and not request.postpath:
            return self
        name = path.decode("utf-8", "replace")
        if name in self._onAll and not request.postpath and (
                request.method == b"POST" or name not in self._orchestrator.processes):
            # (A process named "start" is still reached by GET here, and by
            # POST .../start/start.)
            return self._onAll[name]
        if name not in self._orchestrator.processes:
            return ErrorResource(ApiError(404, f"no process named {name!r}"))
        return _Process(self._orchestrator, name, self._logStream, self._cache)

    def GET(self, request):
        # {"orchestrator_enabled": ..., "default_process": ..., "processes": [...]}
        # from each process's cached encoding, exactly as json.dumps would.
        processes = self._orchestrator.processes
        if len(processes) > 16:
            self._cache.forget(processes)
        head = jsonText({"orchestrator_enabled": self._orchestrator.config.enabled,
                         "default_process": self._default, "processes": []})
        items = b", ".join([self._cache.encoded(p) for p in processes.values()])
        return b"%s%s]}\n" % (head[:-2], items)


class _Reload(ApiResource):
    """
    C{POST}: re-read the configuration file and apply it; an invalid one
    is a 400 listing every problem, and the running configuration stays.
    """

    def __init__(self, orchestrator) -> None:
        super().__init__()
        self._orchestrator = orchestrator

    def POST(self, request):
        jsonObject(request, {})

        def done(summary):
            return {"success": True, "message": "Configuration reloaded",
                    **{key: list(summary.get(key, [])) for key in
                       ("added", "removed", "changed", "unchanged", "updated", "replaced")},
                    "processes": {name: change.toJSON()
                                  for name, change in summary.get("processes", {}).items()}}

        def rejected(failure):
            failure.trap(ConfigError)
            problems = list(failure.value.problems)
            raise ApiError(
                400, f"invalid configuration ({len(problems)} problem(s)); "
                     "the running configuration is kept", extra={"problems": problems})

        return self._orchestrator.reload().addCallbacks(done, rejected)


class _Events(ApiResource):
    """
    C{GET ?since=SEQ&limit=N&process=NAME&type=TYPE}: recent events, oldest
    first; C{/stream} is the same as Server-Sent Events.
    """

    def __init__(self, orchestrator) -> None:
        super().__init__()
        self._orchestrator = orchestrator

    def GET(self, request):
        since = queryInt(request, "since", 0)
        limit = queryInt(request, "limit", 100, 1, MAX_EVENTS)
        process = queryText(request, "process")
        kind = queryChoice(request, "type", EVENT_TYPES)
        bus = self._orchestrator.events
        events = [e for e in bus.recent if e.sequence > since
                  and (process is None or e.process == process)
                  and (kind is None or e.type == kind)]
        last = bus.recent[-1].sequence if bus.recent else 0
        return {"events": [e.toJSON() for e in events[-limit:]], "last_sequence": last}


class _About(ApiResource):
    """
    C{GET}: the orchestrator itself: version, uptime, monitor-only mode.
    """

    def __init__(self, orchestrator) -> None:
        super().__init__()
        self._orchestrator = orchestrator

    def GET(self, request):
        return views.about(self._orchestrator)


class _OpenAPI(ApiResource):
    """
    C{GET}: the OpenAPI 3.2 document of this API.
    """

    def __init__(self, document: dict) -> None:
        super().__init__()
        self._document = document

    def GET(self, request):
        return self._document


class _Metrics(ApiResource):
    """
    C{GET /metrics}: L{orchestrator.notify.metrics.MetricsResource}, with the
    API's JSON 405 for other methods.
    """

    def __init__(self, collector) -> None:
        super().__init__()
        from orchestrator.notify.metrics import MetricsResource

        self._resource = MetricsResource(collector)

    def allowedMethods(self) -> list[str]:
        return ["GET", "HEAD"]

    def render(self, request):
        if request.method in (b"GET", b"HEAD"):
            return self._resource.render_GET(request)
        return super().render(request)


# -- plugins -----------------------------------------------------------------------------


def pluginResources(orchestrator) -> dict[str, tuple[str, object]]:
    """
    Call C{register_admin_resources} on each plugin.

    @return: segment -> C{(plugin name, resource)}.
    @raise ConfigError: a segment is used twice, is not a plain path
        segment, or comes with something that is not an C{IResource}.
    """
    pm = orchestrator.pluginManager
    mounted: dict[str, tuple[str, object]] = {}
    problems = []
    for call in callHook(pm, "register_admin_resources", orchestrator=orchestrator):
        owner = call.plugin
        try:
            if call.failure is not None:
                call.failure.raiseException()
            pairs = [(segment, resource) for segment, resource in call.result or []]
        except Exception as e:
            problems.append(f"plugin {owner}: register_admin_resources failed: {e!r}")
            continue
        for segment, resource in pairs:
            if not isinstance(segment, str) or not segment or "/" in segment or segment in (".", ".."):
                problems.append(f"plugin {owner}: admin resource segment {segment!r} "
                                "is not a single path segment")
            elif not IResource.providedBy(resource):
                problems.append(f"plugin {owner}: admin resource {segment!r} is not an IResource")
            elif segment in mounted:
                problems.append(f"plugin {owner}: admin resource segment {segment!r} "
                                f"(/api/v1/plugins/{segment}) is already mounted by {mounted[segment][0]}")
            else:
                mounted[segment] = (owner, resource)
    if problems:
        raise ConfigError(problems)
    return mounted


# -- the tree ------------------------------------------------------------------------------


def buildTree(orchestrator, admin, counters=None) -> ApiResource:
    """
    The routes, unguarded (see L{buildRoot}).

    @param admin: the C{admin} settings the listener starts with (a reload
        does not change them: they apply at the next start).
    @param counters: the L{orchestrator.web.limits.AdminCounters} the
        event stream counts its limits in.
    """
    from orchestrator.web.openapi import openAPIDocument
    from orchestrator.web.stream import EventStream, LogStream
    from orchestrator.web.ui import StaticFolder, StaticPage, loadAssets

    plugins = pluginResources(orchestrator)
    default = admin.default_process
    what = " (admin.default_process)"

    root = ApiResource()
    api = ApiResource()
    v1 = ApiResource()
    assets = loadAssets()
    root.putChild(b"", StaticPage(assets))
    root.putChild(b"ui", StaticFolder(assets))
    root.putChild(b"api", api)
    root.putChild(b"metrics", _Metrics(orchestrator.metrics))
    api.putChild(b"v1", v1)

    adminNode = ApiResource()
    v1.putChild(b"admin", adminNode)
    adminNode.putChild(b"reload", _Reload(orchestrator))
    backend = ApiResource()
    adminNode.putChild(b"backend", backend)
    for verb in COMMANDS:
        backend.putChild(verb.encode(), _Command(orchestrator, default, verb, what))
    cache = views.StatusCache()
    backend.putChild(b"status", _Status(orchestrator, default, what, cache))
    backend.putChild(b"health", _SeedHealth(orchestrator, default, what))

    streamClients: set = set()  # the event and log streams' clients, bounded together

    def logStream(lookup):
        return LogStream(lookup, orchestrator.reactor, admin, counters, streamClients)

    v1.putChild(b"processes", _Processes(orchestrator, default, logStream, cache))
    v1.putChild(b"groups", _Groups(orchestrator))
    v1.putChild(b"orchestrator", _About(orchestrator))
    events = _Events(orchestrator)
    v1.putChild(b"events", events)
    events.putChild(b"stream", EventStream(orchestrator.events, orchestrator.reactor, admin, counters,
                                           streamClients))
    v1.putChild(b"openapi.json", _OpenAPI(openAPIDocument(admin, sorted(plugins))))

    pluginNode = ApiResource()
    v1.putChild(b"plugins", pluginNode)
    for segment, (_, resource) in plugins.items():
        pluginNode.putChild(segment.encode("utf-8"), resource)
    return root


def buildRoot(orchestrator, admin=None) -> Guard:
    """
    The admin API: the routes behind the L{Guard}.

    @param admin: the C{admin} settings (default: the orchestrator's
        current ones).
    @raise ConfigError: plugin resources clash (see L{pluginResources}).
    """
    from orchestrator.web.limits import AdminCounters

    admin = admin if admin is not None else orchestrator.config.admin
    counters = AdminCounters()
    # The status page's files need no token (its API calls do).
    return Guard(buildTree(orchestrator, admin, counters), admin, counters, public={b"", b"ui"})
