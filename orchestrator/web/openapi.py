"""
The OpenAPI 3.2 document of the admin API, served at
C{GET /api/v1/openapi.json}.  (3.2 for its description of Server-Sent
Events: a C{text/event-stream} response's C{itemSchema} is one message,
C{data}, C{event}, C{id}; the schemas are JSON Schema 2020-12 as in 3.1.)

It is built for the listener it describes: with a token configured every
operation (but C{/metrics}, unless C{admin.metrics_requires_token}) needs
bearer authentication and lists its 401; plugin mounts are listed.  The
schemas are closed (no undocumented field), and C{tests/test_api_openapi.py}
validates real answers against them, so the document cannot drift from
what is served.
"""

from __future__ import annotations

from typing import Any

from orchestrator import __version__
from orchestrator.notify.events import EVENT_TYPES
from orchestrator.web.api import SIGNAL_NUMBERS, SIGNAL_TARGETS

__all__ = ["openAPIDocument"]

_SIGNAL_NAMES = list(SIGNAL_NUMBERS.values())  # (SIGNALS order, those this host has)

_STATUSES = ["stopped", "starting", "running", "unhealthy", "crashed", "stopping", "unknown"]
_VERDICTS = ["healthy", "unhealthy", "unknown"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    kind = schema["type"]
    return {**schema, "type": [kind, "null"] if isinstance(kind, str) else [*kind, "null"]}


def _object(properties: dict, required: list[str] | None = None, description: str = "") -> dict:
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}

_PROBE_RESULT = _object({
    "healthy": _BOOL,
    "reason": {**_STR, "description": "A short explanation: 'HTTP 200', 'Connection refused', 'timeout after 5s'."},
    "detail": _STR,
    "latency_secs": _NUM,
    "timestamp": {**_NUM, "description": "When the check finished (seconds since the epoch)."},
})

_EXIT = _object({
    "pid": _nullable(_INT),
    "exit_code": _nullable(_INT),
    "signal": _nullable(_INT),
    "at": {**_NUM, "description": "When it was reaped (seconds since the epoch)."},
    "uptime_secs": _NUM,
    "cause": {"type": "string", "enum": ["exit", "unhealthy", "start_timeout", "stop", "spawn_failed"]},
    "clean": {**_BOOL, "description": "Whether the exit code is one of restart.success_exit_codes."},
    "description": {**_STR, "description": "'exit code 1', 'killed by signal 9'..."},
})

_HEALTH_FIELDS = {
    "probe": {**_STR, "description": "The probe kind (health.probe), 'none' when not probed."},
    "last_health_check": {"type": "string", "enum": _VERDICTS},
    "last": {"oneOf": [_ref("ProbeResult"), {"type": "null"}]},
    "total": _INT,
    "successes": _INT,
    "failures": _INT,
    "consecutive_failures": _INT,
    "consecutive_successes": _INT,
    "success_rate": {**_NUM, "description": "Passed checks over all checks since the orchestrator started."},
    "window_success_rate": {**_NUM, "description": "Passed checks over the last health.history checks."},
}

_STATUS_FIELDS = {
    "name": _STR,
    "status": {"type": "string", "enum": _STATUSES,
               "description": "'unknown' only for a monitor-only process before its first probe."},
    "pid": _nullable(_INT),
    "uptime_secs": {**_INT, "description": "Whole seconds since the current child was spawned (0 when none)."},
    "restart_count": {**_INT, "description": "Restarts since the orchestrator started (automatic and API)."},
    "last_health_check": {"type": "string", "enum": _VERDICTS,
                          "description": "The last probe's verdict; 'unknown' without a probe or before the first check."},
    "is_running": {**_BOOL, "description": "Status is starting, running or unhealthy."},
    "managed": {**_BOOL, "description": "False in monitor-only mode (orchestrator.enabled: false)."},
    "started_at": {**_nullable(_NUM), "description": "When the current child was spawned (seconds since the epoch)."},
    "gave_up": {**_BOOL, "description": "Automatic restarts stopped (max_attempts or the policy); a start or restart clears it."},
    "attempts": {**_INT, "description": "Automatic restart attempts in the current window."},
    "max_attempts": _INT,
    "next_restart_in": {**_nullable(_NUM), "description": "Seconds until a scheduled automatic restart."},
    "last_exit": {"oneOf": [_ref("ExitRecord"), {"type": "null"}]},
    "health": {"oneOf": [_ref("HealthSummary"), {"type": "null"}],
               "description": "Null until a probed process was first started, and without a probe."},
    "groups": {"type": "array", "items": _STR, "description": "Its groups (the groups: option)."},
    "waiting_for": {**_nullable(_STR), "description": "Why a stopped process is not started yet: its "
                    "dependencies' conditions ('waiting for migrate: exited with code 1'), or null."},
}

_COMMAND_FIELDS = {
    "success": {"const": True},
    "message": {**_STR, "description": "'Backend started successfully', 'Backend is already running', "
                                       "'Backend restart requested'..."},
}

_ERROR_FIELDS = {
    "success": {"const": False},
    "error": {**_STR, "description": "What went wrong, for a human."},
}

_EVENT = _object({
    "id": {**_STR, "description": "Unique; also the webhook-id of deliveries."},
    "sequence": {**_INT, "description": "Increasing; use it as ?since= or Last-Event-ID."},
    "type": {"type": "string", "enum": list(EVENT_TYPES)},
    "process": _nullable(_STR),
    "from": _nullable(_STR),
    "to": _nullable(_STR),
    "reason": _STR,
    "pid": _nullable(_INT),
    "exit_code": _nullable(_INT),
    "signal": _nullable(_INT),
    "restart_count": _INT,
    "attempt": _INT,
    "timestamp": {**_NUM, "description": "Seconds since the epoch."},
    "output": {"type": "array", "items": _STR, "maxItems": 20,
               "description": "gave_up: the child's last output lines (at most 20, each cut at 500 characters); empty otherwise."},
})

SCHEMAS: dict[str, Any] = {
    "Error": _object({**_ERROR_FIELDS}, description="Every error answer."),
    "ReloadRejected": _object({
        **_ERROR_FIELDS,
        "problems": {"type": "array", "items": _STR,
                     "description": "Every problem, located (FILE:LINE:COL: json.path: message)."},
    }, required=["success", "error"]),
    "ProbeResult": _PROBE_RESULT,
    "ExitRecord": _EXIT,
    "HealthSummary": _object(_HEALTH_FIELDS),
    "ProcessStatus": _object(_STATUS_FIELDS, description=(
        "The seed's status answer (status, pid, uptime_secs, restart_count, "
        "last_health_check, is_running) and more.")),
    "CommandAnswer": _object({**_COMMAND_FIELDS, **_STATUS_FIELDS}, description=(
        "A command's outcome: the seed's start {success, message, pid, status}, restart "
        "{success, message, restart_count, pid} and stop {success, message} answers, "
        "with the process's status after the command.")),
    "CommandFailure": _object({**_ERROR_FIELDS, **_STATUS_FIELDS,
                               "output": {"type": "array", "items": _STR, "maxItems": 20,
                                          "description": "The child's last output lines (at most 20, each cut at 500 characters)."}},
                              required=["success", "error"],
                              description=(
        "A start or restart that failed: 'Failed to start backend: No such file or "
        "directory: /path', with the process's status (absent for an unexpected failure).")),
    "SeedHealth": _object({
        "orchestrator_enabled": _BOOL,
        "backend_status": {"type": "string", "enum": _STATUSES},
        "health_check_interval": {**_NUM, "description": "Seconds (an integer when whole)."},
        "auto_restart": _BOOL,
        "max_restart_attempts": _INT,
        "process": {**_STR, "description": "admin.default_process"},
        "probe": _STR,
        "health_check_timeout": _NUM,
        "last_health_check": {"type": "string", "enum": _VERDICTS},
        "restart_delay": _NUM,
    }),
    "ProcessList": _object({
        "orchestrator_enabled": _BOOL,
        "default_process": _STR,
        "processes": {"type": "array", "items": _ref("ProcessStatus")},
    }),
    "OutputLine": _object({
        "timestamp": _NUM,
        "stream": {"type": "string", "enum": ["stdout", "stderr"]},
        "pid": _nullable(_INT),
        "text": _STR,
        "sequence": {**_INT, "description": "Counts the lines the process wrote, from 1; the log stream's "
                                            "event id (Last-Event-ID)."},
    }),
    "Logs": _object({
        "name": _STR,
        "count": _INT,
        "lines": {"type": "array", "items": _ref("OutputLine")},
    }),
    "HealthDetail": _object({
        "name": _STR,
        "status": {"type": "string", "enum": _STATUSES},
        **_HEALTH_FIELDS,
        "results": {"type": "array", "items": _ref("ProbeResult"), "description": "Oldest first."},
    }),
    "About": _object({
        "version": _STR,
        "started_at": {**_nullable(_NUM), "description": "When the orchestrator started (seconds since the epoch)."},
        "uptime_secs": {**_INT, "description": "Whole seconds since it started."},
        "orchestrator_enabled": _BOOL,
        "monitor_only": {**_BOOL, "description": "orchestrator.enabled is false: processes are watched, "
                                                 "never started, stopped or restarted."},
        "default_process": {**_STR, "description": "admin.default_process"},
        "process_count": _INT,
    }),
    "Event": _EVENT,
    "EventList": _object({
        "events": {"type": "array", "items": _ref("Event"), "description": "Oldest first."},
        "last_sequence": {**_INT, "description": "The newest event's sequence (0 before any)."},
    }),
    "ReloadAnswer": _object({
        "success": {"const": True},
        "message": _STR,
        "added": {"type": "array", "items": _STR},
        "removed": {"type": "array", "items": _STR},
        "changed": {"type": "array", "items": _STR,
                    "description": "Updated in place or replaced."},
        "unchanged": {"type": "array", "items": _STR},
        "updated": {"type": "array", "items": _STR,
                    "description": "Supervision policy applied in place: same child, same pid."},
        "replaced": {"type": "array", "items": _STR,
                     "description": "The child's definition changed: a new child."},
        "processes": {
            "type": "object",
            "description": "Per process (removed ones included): what the reload did.",
            "additionalProperties": _object({
                "outcome": {"enum": ["unchanged", "updated", "replaced", "added", "removed"]},
                "fields": {"type": "array", "items": _STR,
                           "description": "The configuration paths that changed."},
                "description": {**_STR, "description": "e.g. `updated in place (health.interval)`."},
            }),
        },
    }),
    "CommandOptions": {
        "type": "object",
        "properties": {"wait": {**_BOOL, "description": "Same as ?wait= (the body wins)."}},
        "additionalProperties": False,
    },
    "Empty": {"type": "object", "additionalProperties": False},
    "SignalRequest": {
        "type": "object",
        "properties": {
            "signal": {"oneOf": [
                {"type": "string", "enum": [*_SIGNAL_NAMES, *("SIG" + n for n in _SIGNAL_NAMES)]},
                {"type": "integer", "enum": sorted(SIGNAL_NUMBERS)},
            ], "description": "A name, with or without SIG, or its number on this host. KILL is refused "
                              "(use stop: it ends the whole group after stop.timeout); so are STOP and "
                              "TSTP (a frozen child fails its probes) and CHLD."},
            "to": {"type": "string", "enum": list(SIGNAL_TARGETS), "default": "group",
                   "description": "group (default): the child's whole process group; process: the child alone."},
        },
        "required": ["signal"],
        "additionalProperties": False,
    },
    "SignalAnswer": _object({
        **_COMMAND_FIELDS,
        "signal": {"type": "string", "enum": _SIGNAL_NAMES, "description": "The name sent, without SIG."},
        "to": {"type": "string", "enum": list(SIGNAL_TARGETS)},
        **_STATUS_FIELDS,
    }, description="Sent. Nothing else changes: a signal that ends the child is handled like any exit "
                   "(a crash unless its code is a success, then the restart policy)."),
    "ProcessOutcome": _object({
        "success": _BOOL,
        "message": {**_STR, "description": "When it succeeded."},
        "error": {**_STR, "description": "When it failed (refused, failed to start, a dependency failed)."},
        "output": {"type": "array", "items": _STR, "maxItems": 20,
                   "description": "A failed start: the child's last output lines."},
        **_STATUS_FIELDS,
    }, required=["name", "success"], description=(
        "One process's outcome within a bulk command, with its status after it (all the status "
        "fields, unless a reload removed the process meanwhile).")),
    "BulkAnswer": _object({
        "success": {**_BOOL, "description": "Every process's command succeeded."},
        "message": {**_STR, "description": "e.g. 'restart: 3 of 3 succeeded'."},
        "group": {**_STR, "description": "The group acted on (group routes only)."},
        "processes": {"type": "array", "items": _ref("ProcessOutcome"),
                      "description": "In the order they were acted on (dependency order)."},
    }, required=["success", "message", "processes"]),
    "GroupList": _object({
        "groups": {"type": "array", "description": "By name.", "items": _object({
            "name": _STR,
            "processes": {"type": "array", "items": _STR, "description": "Its members, in configuration order."},
        })},
    }),
    "Group": _object({
        "name": _STR,
        "processes": {"type": "array", "items": _ref("ProcessStatus")},
    }),
}


def _sse(description: str, data: dict) -> dict:
    """
    A Server-Sent Events response as OpenAPI 3.2 describes one: the
    C{itemSchema} is one message.
    """
    return {"description": description, "content": {"text/event-stream": {
        "schema": _STR,
        "itemSchema": {
            "type": "object",
            "properties": {
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
                "event": _STR,
                "id": _STR,
                "retry": _INT,
            },
        },
    }}}


def _json(schema: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = {
    "400": ("BadRequest", "Malformed query, body, request or Host header; a JSON body nested deeper "
                          "than admin.max_json_depth."),
    "401": ("Unauthorized", "Missing or invalid bearer token (WWW-Authenticate tells which)."),
    "403": ("Forbidden", "An Origin header that is not this server nor in admin.allowed_origins."),
    "404": ("NotFound", "No configured process by that name (for the seed's routes: admin.default_process)."),
    "409": ("Conflict", "The state change is refused: monitor-only mode (orchestrator.enabled: false); "
                        "a signal to a process that is not running."),
    "413": ("TooLarge", "The request body is larger than admin.max_body_bytes; answered before it is read."),
    "421": ("Misdirected", "The Host header does not name this server (DNS rebinding protection); "
                           "see admin.allowed_hosts."),
    "500": ("InternalError", "An unexpected failure (details in the orchestrator's log, never here)."),
    "408": ("RequestTimeout", "The request line and headers (admin.header_timeout) or the body "
                              "(admin.body_timeout) did not arrive in time; the connection is closed."),
    "431": ("HeadersTooLarge", "Request line and headers over 16384 bytes, or more than 100 header "
                               "lines; the connection is closed."),
    "503": ("Unavailable", "Every one of admin.max_connections connections is busy (or, for the event "
                           "stream, admin.max_stream_clients clients are connected); Retry-After says "
                           "when to try again."),
}

_PARAMS = {
    "name": {"name": "name", "in": "path", "required": True, "schema": _STR,
             "description": "A configured process."},
    "wait": {"name": "wait", "in": "query", "required": False,
             "schema": {**_BOOL, "default": True},
             "description": "true (default): answer once the command is done (a start or restart once "
                            "the process is ready or failed to become ready). false: answer at once, "
                            "202 if the command is still going on. Accepts true/false/1/0/yes/no/on/off."},
    "lines": {"name": "lines", "in": "query", "required": False,
              "schema": {**_INT, "minimum": 0, "maximum": 100000, "default": 100},
              "description": "How many of the last captured lines."},
    "limit_health": {"name": "limit", "in": "query", "required": False,
                     "schema": {**_INT, "minimum": 0, "maximum": 100000},
                     "description": "How many of the last results (default: all kept, health.history)."},
    "since": {"name": "since", "in": "query", "required": False,
              "schema": {**_INT, "minimum": 0, "default": 0},
              "description": "Only events with a greater sequence."},
    "limit_events": {"name": "limit", "in": "query", "required": False,
                     "schema": {**_INT, "minimum": 1, "maximum": 1000, "default": 100},
                     "description": "At most this many (the newest)."},
    "process": {"name": "process", "in": "query", "required": False, "schema": _STR,
                "description": "Only events of this process."},
    "type": {"name": "type", "in": "query", "required": False,
             "schema": {"type": "string", "enum": list(EVENT_TYPES)},
             "description": "Only events of this type."},
    "asset": {"name": "asset", "in": "path", "required": True,
              "schema": {"type": "string", "enum": ["app.css", "app.js", "favicon.svg", "index.html"]},
              "description": "One of the status page's files; any other name is a 404."},
    "stream_since": {"name": "since", "in": "query", "required": False,
                     "schema": {**_INT, "minimum": 0},
                     "description": "First replay the recent events with a greater sequence."},
    "last_event_id": {"name": "Last-Event-ID", "in": "header", "required": False,
                      "schema": {**_INT, "minimum": 0},
                      "description": "As since= (sent by EventSource when it reconnects)."},
    "group": {"name": "group", "in": "path", "required": True, "schema": _STR,
              "description": "A group some configured process lists in its groups."},
    "line_since": {"name": "since", "in": "query", "required": False,
                   "schema": {**_INT, "minimum": 0},
                   "description": "First replay the lines still in the ring (log.lines) with a greater sequence."},
}


def openAPIDocument(admin, pluginSegments=()) -> dict:
    """
    Describe the API as served with these C{admin} settings.

    @param pluginSegments: the segments plugins mounted under
        C{/api/v1/plugins/}.
    """
    secured = admin.token is not None

    def operation(opId: str, summary: str, ok: dict, errors=(), params=(), body: str | None = None,
                  description: str = "", tag: str = "processes", token: bool = True) -> dict:
        op: dict[str, Any] = {"operationId": opId, "summary": summary, "tags": [tag]}
        if description:
            op["description"] = description
        if params:
            op["parameters"] = [_PARAMS[p] for p in params]
        if body is not None:
            op["requestBody"] = {"required": False, "content": {
                "application/json": {"schema": _ref(body)}}}
        needsToken = secured and token
        op["security"] = [{"bearerAuth": []}] if needsToken else []
        codes = {"400", "403", "408", "413", "421", "431", "500", "503", *errors}
        if needsToken:
            codes.add("401")
        op["responses"] = dict(ok)
        for code in sorted(codes):
            op["responses"].setdefault(code, {"$ref": f"#/components/responses/{_ERRORS[code][0]}"})
        return op

    command = {
        "200": _json("CommandAnswer", "Done."),
        "202": _json("CommandAnswer", "Accepted (?wait=false): the command goes on; the status is the current one."),
    }
    failed = {"500": _json("CommandFailure", "The process could not be started (spawn error, exit "
                                            "while starting, not ready within health.start_timeout).")}

    def commandOps(prefix: str, seed: bool) -> dict:
        paths = {}
        for verb in ("start", "stop", "restart"):
            summary = {
                "start": "Start the process (idempotent: a running process is left alone).",
                "stop": "Stop the process: stop.signal to its group, SIGKILL after stop.timeout "
                        "(idempotent).",
                "restart": "Stop, wait restart.delay, start, wait until ready.",
            }[verb]
            ok = {**command, **(failed if verb != "stop" else {})}
            paths[f"{prefix}/{verb}"] = {"post": operation(
                f"{'seed' if seed else 'process'}_{verb}", summary, ok,
                errors=("404", "409"), params=(() if seed else ("name",)) + ("wait",),
                body="CommandOptions", tag="seed" if seed else "processes")}
        return paths

    statusOp = lambda opId, tag, params: {"get": operation(  # noqa: E731
        opId, "The process's status.", {"200": _json("ProcessStatus", "Its status.")},
        errors=("404",), params=params, tag=tag)}

    paths: dict[str, Any] = {}
    seed = "/api/v1/admin/backend"
    paths.update(commandOps(seed, True))
    paths[f"{seed}/status"] = statusOp("seed_status", "seed", ())
    paths[f"{seed}/health"] = {"get": operation(
        "seed_health", "How the orchestrator is set up for the default process.",
        {"200": _json("SeedHealth", "Its settings and status.")}, errors=("404",), tag="seed")}
    paths["/api/v1/admin/reload"] = {"post": operation(
        "reload", "Re-read the configuration file and apply it by diff.",
        {"200": _json("ReloadAnswer", "Applied: which processes were added, removed, updated "
                                      "in place, replaced (restarted) or left alone."),
         "400": _json("ReloadRejected", "Invalid: every problem is listed, the running "
                                        "configuration is kept.")},
        body="Empty", tag="admin")}
    paths["/api/v1/processes"] = {"get": operation(
        "list_processes", "Every configured process with its status.",
        {"200": _json("ProcessList", "In configuration order.")})}
    bulk = {"200": _json("BulkAnswer", "Each process's outcome; success is false if any failed.")}
    bulkText = ("In dependency order: a start or restart acts on dependencies first (each rank at once), "
                "a stop on dependents first; a process whose dependency failed here is not started. "
                "Answers when every command is done (a start or restart once ready).")
    for verb in ("start", "stop", "restart"):
        paths[f"/api/v1/processes/{verb}"] = {"post": operation(
            f"all_{verb}", f"{verb.capitalize()} every configured process.", bulk, errors=("409",),
            body="Empty", description=bulkText + " (A process named like this verb is still reached "
                                                 "by GET here and POST .../{name}/" + verb + ".)")}
    name = "/api/v1/processes/{name}"
    paths[name] = statusOp("get_process", "processes", ("name",))
    paths.update(commandOps(name, False))
    paths[f"{name}/status"] = statusOp("process_status", "processes", ("name",))
    paths[f"{name}/signal"] = {"post": operation(
        "process_signal", "Send a signal to the running process (its group by default).",
        {"200": _json("SignalAnswer", "Sent.")}, errors=("404", "409"), params=("name",),
        body="SignalRequest",
        description="Allowed: " + ", ".join(_SIGNAL_NAMES) + " (with or without SIG, or their numbers). "
                    "400 for any other (KILL: use stop); 409 when the process is not running.")}
    paths[f"{name}/signal"]["post"]["requestBody"]["required"] = True
    paths[f"{name}/logs"] = {"get": operation(
        "process_logs", "The last lines the process wrote (stdout and stderr).",
        {"200": _json("Logs", "Oldest first.")}, errors=("404",), params=("name", "lines"))}
    paths[f"{name}/logs/stream"] = {"get": operation(
        "stream_process_logs", "The process's new output lines as Server-Sent Events.",
        {"200": _sse("A text/event-stream: per line 'id: <sequence>', 'event: line', 'data: <OutputLine "
                     "as JSON>'; with Last-Event-ID (or since=) first the lines still in the ring after "
                     "it. Bounded like the event stream (see there); it also ends, asking to reconnect, "
                     "when a reload removes or replaces the process.", _ref("OutputLine"))},
        errors=("404",), params=("name", "line_since", "last_event_id"))}
    paths["/api/v1/groups"] = {"get": operation(
        "list_groups", "Every group (from the processes' groups option) and its members.",
        {"200": _json("GroupList", "By name.")}, tag="groups")}
    paths["/api/v1/groups/{group}"] = {"get": operation(
        "get_group", "A group's members with their status.",
        {"200": _json("Group", "In configuration order.")}, errors=("404",), params=("group",), tag="groups")}
    for verb in ("start", "stop", "restart"):
        paths[f"/api/v1/groups/{{group}}/{verb}"] = {"post": operation(
            f"group_{verb}", f"{verb.capitalize()} every member of the group.", bulk,
            errors=("404", "409"), params=("group",), body="Empty", description=bulkText, tag="groups")}
    paths[f"{name}/health"] = {"get": operation(
        "process_health", "The process's last probe results and counters.",
        {"200": _json("HealthDetail", "Results oldest first.")}, errors=("404",),
        params=("name", "limit_health"))}
    paths["/api/v1/events"] = {"get": operation(
        "list_events", "Recent events (the last 500 are kept).",
        {"200": _json("EventList", "Matching events, oldest first.")},
        params=("since", "limit_events", "process", "type"), tag="events")}
    paths["/api/v1/events/stream"] = {"get": operation(
        "stream_events", "Events as Server-Sent Events, as they happen.",
        {"200": _sse("A text/event-stream: 'id: <sequence>', 'event: <type>', "
                     "'data: <Event as JSON>' per event, a ': keep-alive' comment every "
                     f"{admin.stream_keepalive:g} s. A client more than "
                     f"admin.stream_buffer_bytes ({admin.stream_buffer_bytes}) behind gets a "
                     "final 'event: overflow' (data: an Error) and is disconnected; one that "
                     f"reads nothing for {admin.stream_stall_timeout:g} s is disconnected; "
                     f"the stream ends after {admin.stream_max_seconds:g} s (reconnect with "
                     "Last-Event-ID). At most admin.max_stream_clients "
                     f"({admin.max_stream_clients}) event and log stream clients together.",
                     {"oneOf": [_ref("Event"), _ref("Error")]})},
        params=("stream_since", "process", "last_event_id"), tag="events")}
    paths["/api/v1/orchestrator"] = {"get": operation(
        "about", "The orchestrator itself: version, uptime, monitor-only mode.",
        {"200": _json("About", "Its version and state.")}, tag="admin")}
    page = {"description": "The status page (static HTML; its script calls this API). Served with "
                           "Cache-Control: no-cache, an ETag and a Content-Security-Policy that "
                           "allows nothing but this origin's script, style, images and requests.",
            "content": {"text/html": {"schema": _STR}}}
    notModified = {"304": {"description": "If-None-Match named the current ETag: no body."}}
    for path, opId in (("/", "status_page"), ("/ui/", "status_page_ui")):
        paths[path] = {"get": operation(
            opId, "The status page: every process live, its actions, logs and events.",
            {"200": page, **notModified}, tag="ui", token=False,
            description="No token needed for the page itself (it holds nothing); it asks for "
                        "the token when the API answers 401 and sends it as a bearer header.")}
    paths["/ui/{asset}"] = {"get": operation(
        "status_page_asset", "A file of the status page (stylesheet, script, icon).",
        {"200": {"description": "The file, with the same headers as the page.",
                 "content": {"text/css": {"schema": _STR}, "text/javascript": {"schema": _STR},
                             "image/svg+xml": {"schema": _STR}, "text/html": {"schema": _STR}}},
         **notModified},
        errors=("404",), params=("asset",), tag="ui", token=False)}
    paths["/api/v1/openapi.json"] = {"get": operation(
        "openapi", "This document.",
        {"200": {"description": "OpenAPI 3.2.", "content": {"application/json": {"schema": {"type": "object"}}}}},
        tag="admin")}
    paths["/metrics"] = {"get": operation(
        "metrics", "Prometheus metrics.",
        {"200": {"description": "The Prometheus text format (or OpenMetrics, by Accept).",
                 "content": {"text/plain": {"schema": _STR},
                             "application/openmetrics-text": {"schema": _STR}}}},
        tag="admin", token=admin.metrics_requires_token)}
    for segment in pluginSegments:
        paths[f"/api/v1/plugins/{segment}"] = {
            "summary": f"Mounted by a plugin (register_admin_resources): {segment}",
            "description": "Behind the same token, Host and Origin checks; the plugin defines the rest.",
        }

    responses = {
        component: {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
        for component, text in _ERRORS.values()
    }
    document = {
        "openapi": "3.2.0",
        "info": {
            "title": "orchestrator admin API",
            "version": __version__,
            "description": (
                "Drive the orchestrator's processes. Every answer is JSON (but /metrics, the event "
                "and log streams and the status page's files); every error is {\"success\": false, \"error\": \"...\"}. Every GET but the "
                "streams also answers HEAD. Any other method answers 405 with an Allow header; "
                "an unknown path "
                "answers 404. Checks on every request, in order: connections (503), request line and "
                "headers (431, 408), body size (413), Host (421, 400 if missing), Origin (403), token "
                "(401) -- the last four before any body is read -- then the body (408, 400 for JSON "
                "nested too deep)."
            ),
        },
        "tags": [
            {"name": "seed", "description": "The seed's contract, acting on admin.default_process."},
            {"name": "processes", "description": "Every configured process by name."},
            {"name": "groups", "description": "Processes by the groups they list."},
            {"name": "events", "description": "What happened."},
            {"name": "admin", "description": "The orchestrator itself."},
            {"name": "ui", "description": "The status page, for a browser."},
        ],
        "paths": paths,
        "components": {"schemas": SCHEMAS, "responses": responses},
    }
    if secured:
        document["components"]["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "admin.token (or admin.token_file, env ORCHESTRATOR_ADMIN_TOKEN)."}}
    return document
