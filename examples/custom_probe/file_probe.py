"""
An example third-party probe kind: C{file}.

A process is healthy while a file exists and, if C{contains} is given,
holds that text: the contract of a worker that touches a heartbeat or
readiness file instead of answering HTTP.

Use it by naming this module in the configuration's C{plugins:} list (its
folder must be importable, e.g. on C{PYTHONPATH}), or from an installed
package through the C{orchestrator} entry point group::

    plugins: [file_probe]
    processes:
      worker:
        command: ["/usr/local/bin/worker"]
        health:
          probe: file
          file: /run/worker/ready
          contains: "ok"

Its C{config_schema} is merged into the master schema, so C{file} is
required and a misspelled key is reported like any other configuration
error.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed

from orchestrator.plugin import ProbeResult, hookimpl

__all__ = ["FileProbe"]


class FileProbe:
    """
    Healthy while C{file} exists (and contains C{contains}, if set).

    The check reads at most C{max_bytes} bytes synchronously: a small local
    file, so blocking the reactor for it is cheaper than a thread.
    """

    name = "file"
    config_schema = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "minLength": 1,
                     "description": "file probe: the file that must exist."},
            "contains": {"type": ["string", "null"], "default": None,
                         "description": "file probe: text the file must contain."},
            "max_bytes": {"type": "integer", "minimum": 1, "default": 4096,
                          "description": "file probe: most bytes read from the file."},
        },
    }

    def __init__(self, config, reactor) -> None:
        options = config.options
        self.path = options["file"]
        self._contains = options.get("contains")
        self._max = options.get("max_bytes", 4096)

    def check(self) -> Deferred:
        try:
            with open(self.path, "rb") as f:
                data = f.read(self._max)
        except FileNotFoundError:
            return succeed(ProbeResult(False, f"{self.path} does not exist"))
        except OSError as e:
            return succeed(ProbeResult(False, f"{self.path}: {e.strerror or e}"))
        text = data.decode("utf-8", errors="replace")
        if self._contains is not None and self._contains not in text:
            return succeed(ProbeResult(False, f"{self.path} lacks {self._contains!r}", text[:200]))
        return succeed(ProbeResult(True, f"{self.path} present", text[:200]))


@hookimpl
def register_probe_kinds():
    return [FileProbe]
