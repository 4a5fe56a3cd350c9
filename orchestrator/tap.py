"""
C{twistd orchestrator}: command-line options and the service maker.

The configuration is loaded and validated in L{Options.postOptions}, so a
bad configuration is reported with every problem (exit code 2) before
twistd daemonises or touches the reactor.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from twisted.python import usage

from orchestrator.config.load import loadConfig
from orchestrator.errors import AlreadyRunning, ConfigError
from orchestrator.lifecycle import EXIT_ALREADY_RUNNING, EXIT_CONFIG

__all__ = ["Options", "makeService"]


class Options(usage.Options):
    """
    Options of C{twistd orchestrator}.
    """

    synopsis = "[--config FILE] [--env-file FILE] [--listen ENDPOINT]"
    longdesc = (
        "Supervise the processes configured in a YAML file: start, stop, "
        "restart, health probes, restart policies, a REST admin API and "
        "Prometheus metrics. Precedence: command line > environment > .env > YAML > defaults."
    )
    optParameters = [
        ["config", "c", "conf/orchestrator.yaml", "The YAML configuration file."],
        ["env-file", "e", None, "A .env file (default: ./.env, else the .env beside the YAML file, if present)."],
        ["listen", "l", None, "Admin API endpoint, overriding admin.listen "
                              "(e.g. tcp:8000:interface=127.0.0.1, unix:/run/orch.sock:mode=600)."],
    ]

    #: Leave TLS out of this process when the configuration at start does
    #: not use it (L{orchestrator.tls}): right for twistd, which imports
    #: the reactor after these options; a test parsing them in its own
    #: process sets it to C{False}.
    leaveOutTLS = True

    def _load(self, leaveOutTLS: bool = False):
        overrides = {}
        if self["listen"]:
            overrides[("admin", "listen")] = self["listen"]
        return loadConfig(self["config"], envFile=self["env-file"], cliOverrides=overrides,
                          leaveOutTLS=leaveOutTLS)

    def postOptions(self) -> None:
        try:
            self.loaded = self._load(leaveOutTLS=self.leaveOutTLS)
        except ConfigError as e:
            # Not a UsageError: twistd would print its whole --help first and
            # exit 1.  An invalid configuration is exit code 2, every problem
            # on its own line, nothing started.
            _cannotStart(EXIT_CONFIG, "invalid configuration", e.problems)


def _cannotStart(code: int, what: str, problems) -> NoReturn:
    problems = list(problems)
    if len(problems) == 1:
        sys.stderr.write(f"twistd orchestrator: {what}: {problems[0]}\n")
    else:
        sys.stderr.write(f"twistd orchestrator: {what} ({len(problems)} problems):\n  "
                         + "\n  ".join(problems) + "\n")
    sys.stderr.flush()
    raise SystemExit(code)


def makeService(options: Options):
    """
    Build the orchestrator service for twistd, with what a service manager
    needs: the exit status (L{orchestrator.lifecycle}), C{sd_notify}
    (L{orchestrator.sdnotify}) and the meaning of SIGHUP.  Unless twistd
    was given a C{--reactor}, it runs on
    L{orchestrator.supervision.reactor.ChildFirstReactor}: child exits
    before API requests.
    """
    from orchestrator.supervision.reactor import installIfNone

    installIfNone()  # before the first import of the global reactor
    from twisted.internet import reactor

    from orchestrator.app import Orchestrator
    from orchestrator.heap import HeapSettler
    from orchestrator.lifecycle import Hangup, ProcessExitStatus
    from orchestrator.logs import buildObserver
    from orchestrator.sdnotify import SystemdLink, SystemdNotifier, watchdogPeriod
    from orchestrator.supervision.spawn import sessionSpawner

    loaded = options.loaded
    notifier = SystemdNotifier.fromEnvironment(reactor, os.environ)
    systemd = (SystemdLink(notifier, reactor, watchdogPeriod(os.environ, os.getpid()))
               if notifier is not None else None)
    exitStatus = ProcessExitStatus()
    try:
        service = Orchestrator(
            loaded,
            reactor,
            sessionSpawner(reactor),
            reload=options._load,
            logObserver=buildObserver(loaded.config.logging),
            handleSignals=True,
            reapOrphans=True,
            exitStatus=exitStatus,
            systemd=systemd,
            hangup=Hangup(os.environ),
            heap=HeapSettler(reactor),
        )
        service.checkStateFile()
    except AlreadyRunning as e:
        _cannotStart(EXIT_ALREADY_RUNNING, "already running", e.problems)
    except (ConfigError, OSError) as e:
        # Problems only a built service can find (two plugins mounting the
        # same admin route, a log file that cannot be opened): reported
        # like any configuration error, without a traceback.
        found = e.problems if isinstance(e, ConfigError) else (f"{e.strerror}: {e.filename}",)
        _cannotStart(EXIT_CONFIG, "cannot start", found)
    exitStatus.install()
    return service
