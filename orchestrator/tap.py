"""
C{twistd orchestrator}: command-line options and the service maker.

The configuration is loaded and validated in L{Options.postOptions}, so a
bad configuration is a usage error, reported with every problem before
twistd daemonises or touches the reactor.
"""

from __future__ import annotations

from twisted.python import usage

from orchestrator.config.load import loadConfig
from orchestrator.errors import ConfigError

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

    def _load(self):
        overrides = {}
        if self["listen"]:
            overrides[("admin", "listen")] = self["listen"]
        return loadConfig(self["config"], envFile=self["env-file"], cliOverrides=overrides)

    def postOptions(self) -> None:
        try:
            self.loaded = self._load()
        except ConfigError as e:
            raise usage.UsageError(
                f"invalid configuration ({len(e.problems)} problem(s)):\n  " + "\n  ".join(e.problems)
            )


def makeService(options: Options):
    """
    Build the orchestrator service for twistd.
    """
    from twisted.internet import reactor

    from orchestrator.logs import buildObserver
    from orchestrator.app import Orchestrator
    from orchestrator.supervision.spawn import sessionSpawner

    loaded = options.loaded
    try:
        return Orchestrator(
            loaded,
            reactor,
            sessionSpawner(reactor),
            reload=options._load,
            logObserver=buildObserver(loaded.config.logging),
            handleSignals=True,
            reapOrphans=True,
        )
    except (ConfigError, OSError) as e:
        # Problems only a built service can find (two plugins mounting the
        # same admin route, another orchestrator on the same state file, a
        # log file that cannot be opened): report them like any
        # configuration error, without a traceback.
        import sys

        found = e.problems if isinstance(e, ConfigError) else (f"{e.strerror}: {e.filename}",)
        print(f"twistd orchestrator: cannot start ({len(found)} problem(s)):\n  "
              + "\n  ".join(found), file=sys.stderr)
        raise SystemExit(1)
