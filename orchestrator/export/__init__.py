"""
C{orchestrator export kubernetes|compose|systemd}: the same YAML, rendered
for the engines its users move to when they outgrow one host.

One module per target (L{kubernetes}, L{compose}, L{systemd}), each a pure
function from a loaded L{orchestrator.config.Config} to an
L{common.Export} (files and the "not exported" report); L{common} holds
what they share, including writing the result.  The configuration is read
by the normal loader, so an invalid file fails with the loader's located
errors.
"""

from orchestrator.export.common import Export, NotExported, loadForExport, writeExport
from orchestrator.export.compose import exportCompose
from orchestrator.export.kubernetes import exportKubernetes
from orchestrator.export.systemd import exportSystemd

__all__ = [
    "Export",
    "NotExported",
    "exportCompose",
    "exportKubernetes",
    "exportSystemd",
    "loadForExport",
    "writeExport",
]
