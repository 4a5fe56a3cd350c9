"""
What the admin API shows of the orchestrator's state, as JSON values.

One function per shape, each the only place that shape is built, so the
seed's routes and the per-process routes cannot drift apart, and
L{orchestrator.web.openapi} describes exactly these.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.supervision.process import ProcessSnapshot
from orchestrator.web._render import jsonText

__all__ = [
    "ALIVE",
    "about",
    "exitRecord",
    "healthDetail",
    "healthSummary",
    "label",
    "number",
    "processStatus",
    "seedHealth",
    "StatusCache",
]

#: Statuses in which the seed's C{is_running} is true: a child is there and
#: it is not being stopped.
ALIVE = frozenset({"starting", "running", "unhealthy"})


def number(value: float) -> int | float:
    """
    C{30.0} -> C{30}: the seed answered whole seconds as integers.
    """
    return int(value) if float(value).is_integer() else value


def label(name: str) -> str:
    """
    C{"backend"} -> C{"Backend"}, as the seed's messages say it.
    """
    return name[:1].upper() + name[1:]


def exitRecord(record) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "pid": record.pid,
        "exit_code": record.exit_code,
        "signal": record.signal,
        "at": record.at,
        "uptime_secs": round(record.uptime, 3),
        "cause": record.cause,
        "clean": record.clean,
        "description": record.describe(),
    }


def healthSummary(health) -> dict[str, Any] | None:
    """
    A L{orchestrator.health.HealthSnapshot} without its result history.
    """
    if health is None:
        return None
    return {
        "probe": health.probe,
        "last_health_check": health.last_health_check,
        "last": health.last.toJSON() if health.last is not None else None,
        "total": health.total,
        "successes": health.successes,
        "failures": health.failures,
        "consecutive_failures": health.consecutive_failures,
        "consecutive_successes": health.consecutive_successes,
        "success_rate": health.success_rate,
        "window_success_rate": health.window_success_rate,
    }


def processStatus(snapshot: ProcessSnapshot) -> dict[str, Any]:
    """
    A process's status: the seed's C{status} answer (C{status}, C{pid},
    C{uptime_secs}, C{restart_count}, C{last_health_check},
    C{is_running}) plus everything else an operator asks next.
    """
    health = snapshot.health
    return {
        "name": snapshot.name,
        "status": snapshot.status,
        "pid": snapshot.pid,
        "uptime_secs": int(snapshot.uptime),
        "restart_count": snapshot.restart_count,
        "last_health_check": health.last_health_check if health is not None else "unknown",
        "is_running": snapshot.status in ALIVE,
        "managed": snapshot.managed,
        "started_at": snapshot.started_at,
        "gave_up": snapshot.gave_up,
        "attempts": snapshot.attempts,
        "max_attempts": snapshot.max_attempts,
        "next_restart_in": snapshot.next_restart_in,
        "last_exit": exitRecord(snapshot.last_exit),
        "health": healthSummary(health),
        "groups": list(snapshot.groups),
        "waiting_for": snapshot.waiting_for,
    }


#: Stand for the fields a cached encoding leaves open (it is split there).
_MARKS = {"uptime_secs": "\x00uptime\x00", "last_health_check": "\x00check\x00",
          "health": "\x00health\x00"}
_MARKS_JSON = [json.dumps(mark).encode("ascii") for mark in _MARKS.values()]


def _afterUptime(pieces: list[bytes], check: str, summary) -> bytes:
    """
    A status's text after its C{uptime_secs}: C{pieces} (the encoding split
    around the three marks) with the two health fields written in.
    """
    _, betweenUptimeAndCheck, betweenCheckAndHealth, after = pieces
    return b"%s%s%s%s%s" % (betweenUptimeAndCheck, jsonText(check), betweenCheckAndHealth,
                            jsonText(summary), after)


class StatusCache:
    """
    L{processStatus} of each process as JSON, encoded once per change.

    What a process's status shows changes with its state (C{stateKey()}),
    its probe results (C{healthKey()}) and, for C{uptime_secs}, the clock.
    So each process keeps its encoding in pieces around those three
    fields: the pieces are re-encoded when its state changed, the two
    health fields when a probe answered (a thousand processes probed every
    second must not cost a full encoding each), and the uptime is written
    in at each answer.  A process waiting for a restart
    (C{next_restart_in} counts down) is encoded afresh each time: it is a
    moment, not a state.
    """

    def __init__(self) -> None:
        self._entries: dict[str, list] = {}

    def encoded(self, process) -> bytes:
        """
        C{json.dumps(processStatus(process.snapshot()))} in the API's style
        (L{orchestrator.web._render.jsonBody} without its newline).
        """
        state, health = process.stateKey(), process.healthKey()
        entry = self._entries.get(process.name)
        if entry is None or entry[0] is not process or entry[1] != state:
            snapshot = process.snapshot()
            status = processStatus(snapshot)
            if snapshot.next_restart_in is not None:
                self._entries.pop(process.name, None)
                return jsonText(status)
            check, summary = status["last_health_check"], status["health"]
            status.update(_MARKS)
            pieces = [jsonText(status)]
            for mark in _MARKS_JSON:
                pieces[-1:] = pieces[-1].split(mark)
            # [process, state, health, text before the uptime, text after
            # it, the pieces around the two health fields: kept only for a
            # probed process, the only kind whose health changes alone (a
            # new monitor is a new stateKey)]
            entry = self._entries[process.name] = [process, state, health, pieces[0],
                                                   _afterUptime(pieces, check, summary),
                                                   pieces if health is not None else None]
        elif entry[2] != health:
            snapshot = process.health.snapshot() if process.health is not None else None
            entry[2] = health
            entry[4] = _afterUptime(entry[5], snapshot.last_health_check if snapshot is not None else "unknown",
                                    healthSummary(snapshot))
        return b"%s%d%s" % (entry[3], int(process.uptime()), entry[4])

    def forget(self, names) -> None:
        """
        Drop the entries of processes no longer configured.
        """
        for name in [n for n in self._entries if n not in names]:
            del self._entries[name]


def healthDetail(process, limit: int | None) -> dict[str, Any]:
    """
    The last C{limit} probe results of a process (all kept ones if
    C{None}) with the counters.
    """
    snapshot = process.snapshot()
    health = snapshot.health
    results = list(health.results) if health is not None else []
    if limit is not None:
        results = results[-limit:] if limit else []
    summary = healthSummary(health) or {
        "probe": process.config.health.probe,
        "last_health_check": "unknown",
        "last": None,
        "total": 0,
        "successes": 0,
        "failures": 0,
        "consecutive_failures": 0,
        "consecutive_successes": 0,
        "success_rate": 1.0,
        "window_success_rate": 1.0,
    }
    return {"name": snapshot.name, "status": snapshot.status, **summary,
            "results": [r.toJSON() for r in results]}


def seedHealth(config, process) -> dict[str, Any]:
    """
    The seed's C{GET /api/v1/admin/backend/health}: how the orchestrator
    is set up for the default process.
    """
    pconfig = process.config
    snapshot = process.snapshot()
    return {
        "orchestrator_enabled": config.enabled,
        "backend_status": snapshot.status,
        "health_check_interval": number(pconfig.health.interval),
        # What happens, not what is configured: monitor-only restarts nothing.
        "auto_restart": pconfig.restart.auto and config.enabled,
        "max_restart_attempts": pconfig.restart.max_attempts,
        "process": process.name,
        "probe": pconfig.health.probe,
        "health_check_timeout": number(pconfig.health.timeout),
        "last_health_check": (snapshot.health.last_health_check
                              if snapshot.health is not None else "unknown"),
        "restart_delay": number(pconfig.restart.delay),
    }


def about(orchestrator) -> dict[str, Any]:
    """
    The orchestrator itself, for the status page's header: version,
    uptime (by its own clock) and whether it only monitors.
    """
    startedAt = orchestrator.startedAt
    uptime = orchestrator.reactor.seconds() - startedAt if startedAt is not None else 0.0
    return {
        "version": orchestrator.version,
        "started_at": startedAt,
        "uptime_secs": int(max(uptime, 0.0)),
        "orchestrator_enabled": orchestrator.config.enabled,
        "monitor_only": not orchestrator.config.enabled,
        "default_process": orchestrator.config.admin.default_process,
        "process_count": len(orchestrator.processes),
    }
