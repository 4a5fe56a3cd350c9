"""
The built-in plugins (probe kinds, restart policies, notifiers), importable
as C{orchestrator.builtin.probes} and so on.

Their source lives in the repository's top-level C{plugins/} folder, to
show that the public hooks suffice.  A wheel installs that folder here
(C{package_dir} in C{setup.cfg}), replacing this file, so nothing named
C{plugins} lands in site-packages; in a source checkout (the editable
install C{make} does) this file points the package at that folder.
"""

import os as _os

_SOURCE = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.dirname(
    _os.path.abspath(__file__)))), "plugins")
if _os.path.isfile(_os.path.join(_SOURCE, "probes.py")):
    __path__.append(_SOURCE)  # noqa: F821 - a package's own __path__
