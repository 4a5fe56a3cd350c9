"""
The C{orchestrator} console command: C{orchestrator check-config},
C{config-reference} and C{export kubernetes|compose|systemd}.

C{check-config} validates a configuration exactly as C{twistd orchestrator}
would and prints the effective values with where each came from, which
C{.env} file was read, and the warnings a run would log, plus one thing
only a check at this moment can see: a process's C{url} port already taken
by another program.  C{export} renders it for another engine
(L{orchestrator.export}).
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import socket
import sys
from urllib.parse import urlsplit

from orchestrator.config.load import loadConfig
from orchestrator.config.types import thaw
from orchestrator.errors import ConfigError

__all__ = ["main"]


def _leaves(value, prefix=""):
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from _leaves(sub, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
        for i, sub in enumerate(value):
            yield from _leaves(sub, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _printProblems(path: str, error: ConfigError) -> int:
    print(f"{path}: invalid configuration ({len(error.problems)} problem(s)):", file=sys.stderr)
    for problem in error.problems:
        print(f"  {problem}", file=sys.stderr)
    for warning in getattr(error, "warnings", ()):
        print(f"  warning: {warning}", file=sys.stderr)
    return 1


def _checkConfig(args) -> int:
    overrides = {("admin", "listen"): args.listen} if args.listen else {}
    try:
        loaded = loadConfig(args.config, envFile=args.env_file, cliOverrides=overrides)
    except ConfigError as e:
        return _printProblems(args.config, e)
    config = loaded.config
    document = thaw(config.document)
    warnings = list(loaded.warnings) + portWarnings(config)
    if args.json:
        print(json.dumps({"config": document, "sources": dict(config.sources),
                          "env_file": loaded.envFile, "warnings": warnings}, indent=2))
        return 0
    print(f"{args.config}: OK ({len(config.processes)} process(es), "
          f"{'managing' if config.enabled else 'monitor-only'})")
    print(f"  .env file: {loaded.envFile if loaded.envFile is not None else '(none)'}")
    for warning in warnings:
        print(f"  warning: {warning}")
    rows = list(_leaves(document))
    width = max((len(path) for path, _ in rows), default=0)
    for path, value in rows:
        source = config.sources.get(path)
        if source is None:  # a list of scalars: its items share a source
            source = next((s for p, s in config.sources.items() if p.startswith(path + "[")), "default")
        print(f"  {path:<{width}} = {json.dumps(value)}  ({source})")
    return 0


def portWarnings(config) -> list[str]:
    """
    For each managed process whose C{url} is on this host, whether its
    port is already bound by another program now: the process would fail
    to listen (or the probes would reach that other program).  Only a
    warning: the other program may be gone by the time the run starts.
    """
    found = _adminPortWarning(config.admin.listen)
    if not config.enabled:
        return found
    for name, process in config.processes.items():
        if not process.url:
            continue
        parts = urlsplit(process.url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        host = parts.hostname or ""
        if not _isLocal(host):
            continue
        if _bound(host, port):
            found.append(f"processes.{name}.url: port {port} on {host} is already in use by "
                         "another program; the process will not be able to listen on it")
    return found


def _adminPortWarning(listen: str) -> list[str]:
    """
    Whether the admin API's TCP port (C{admin.listen}) is already bound
    now: the run would exit 1 without spawning anything (often another
    orchestrator still runs).
    """
    from orchestrator.config._checks import tcpListenAddress

    address = tcpListenAddress(listen)
    if address is None:
        return []
    interface, port = address
    host = interface or ("::" if listen.startswith("tcp6:") else "0.0.0.0")
    if port == 0 or not _bound(host, port):
        return []
    return [f"admin.listen: port {port} on {host} is already in use by another program "
            "(another orchestrator?); a run would exit 1 before spawning anything"]


def _isLocal(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _bound(host: str, port: int) -> bool:
    """
    Whether binding C{host:port} fails because it is in use (with
    C{SO_REUSEADDR}, as servers bind, so connections in TIME_WAIT do not
    count).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1" if host == "localhost" else host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _export(args) -> int:
    from orchestrator import export

    try:
        config = export.loadForExport(args.config, envFile=args.env_file)
    except ConfigError as e:
        return _printProblems(args.config, e)
    if args.target == "kubernetes":
        result = export.exportKubernetes(config, image=args.image, namespace=args.namespace,
                                         inlineSecrets=args.inline_secrets)
    elif args.target == "compose":
        result = export.exportCompose(config, image=args.image, inlineSecrets=args.inline_secrets)
    else:
        result = export.exportSystemd(config, inlineSecrets=args.inline_secrets)
    try:
        written = export.writeExport(result, args.output, sys.stdout, sys.stderr,
                                     directory=args.target == "systemd")
    except OSError as e:
        print(f"{args.output}: cannot write: {e.strerror}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _addExport(commands) -> None:
    exporter = commands.add_parser("export", help="render the configuration for Kubernetes, "
                                   "docker compose or systemd")
    targets = exporter.add_subparsers(dest="target", required=True)
    helps = {"kubernetes": "Deployments/Jobs, Services and a Secret, as multi-document YAML",
             "compose": "a compose file with one service per process",
             "systemd": "one .service unit per process, written into a folder"}
    for target, text in helps.items():
        sub = targets.add_parser(target, help=text, description=text)
        sub.add_argument("config", nargs="?", default="conf/orchestrator.yaml")
        sub.add_argument("--env-file", default=None, help="a .env file (default: ./.env if present)")
        sub.add_argument("--inline-secrets", action="store_true",
                         help="write secret values (literal and from .env) instead of leaving them empty")
        if target == "systemd":
            sub.add_argument("-o", "--output", required=True, metavar="DIR",
                             help="folder to write the units into (created if missing)")
        else:
            sub.add_argument("-o", "--output", default=None, metavar="FILE",
                             help="write to FILE instead of standard output")
            sub.add_argument("--image", default=None, help="container image of every process")
        if target == "kubernetes":
            sub.add_argument("--namespace", default=None, help="namespace set on every object")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.strip().splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate a configuration and show its effective values")
    check.add_argument("config", nargs="?", default="conf/orchestrator.yaml")
    check.add_argument("--env-file", default=None, help="a .env file (default: ./.env, else the .env beside the YAML file, if present)")
    check.add_argument("--listen", default=None, help="admin endpoint override, as twistd's --listen")
    check.add_argument("--json", action="store_true", help="print JSON")
    reference = commands.add_parser("config-reference", help="print the Markdown configuration reference")
    reference.add_argument("--plugins", nargs="*", default=[], help="extra plugin modules to include")
    _addExport(commands)
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _checkConfig(args)
    if args.command == "config-reference":
        from orchestrator.hooks.manager import buildPluginManager, collectKinds
        from orchestrator.config.reference import configReference
        from orchestrator.config.schema import masterSchema

        kinds = collectKinds(buildPluginManager(args.plugins, entryPoints=False))
        print(configReference(masterSchema(kinds)))
        return 0
    if args.command == "export":
        return _export(args)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
