"""
The C{orchestrator} console command: C{orchestrator check-config}.

Validates a configuration exactly as C{twistd orchestrator} would and
prints the effective values with where each came from.
"""

from __future__ import annotations

import argparse
import json
import sys

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


def _checkConfig(args) -> int:
    overrides = {("admin", "listen"): args.listen} if args.listen else {}
    try:
        loaded = loadConfig(args.config, envFile=args.env_file, cliOverrides=overrides)
    except ConfigError as e:
        print(f"{args.config}: invalid configuration ({len(e.problems)} problem(s)):", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    config = loaded.config
    document = thaw(config.document)
    if args.json:
        print(json.dumps({"config": document, "sources": dict(config.sources)}, indent=2))
        return 0
    print(f"{args.config}: OK ({len(config.processes)} process(es), "
          f"{'managing' if config.enabled else 'monitor-only'})")
    rows = list(_leaves(document))
    width = max((len(path) for path, _ in rows), default=0)
    for path, value in rows:
        source = config.sources.get(path)
        if source is None:  # a list of scalars: its items share a source
            source = next((s for p, s in config.sources.items() if p.startswith(path + "[")), "default")
        print(f"  {path:<{width}} = {json.dumps(value)}  ({source})")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.strip().splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate a configuration and show its effective values")
    check.add_argument("config", nargs="?", default="conf/orchestrator.yaml")
    check.add_argument("--env-file", default=None, help="a .env file (default: ./.env if present)")
    check.add_argument("--listen", default=None, help="admin endpoint override, as twistd's --listen")
    check.add_argument("--json", action="store_true", help="print JSON")
    reference = commands.add_parser("config-reference", help="print the Markdown configuration reference")
    reference.add_argument("--plugins", nargs="*", default=[], help="extra plugin modules to include")
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
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
