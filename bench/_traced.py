"""
C{twistd} under tracemalloc, for C{bench/footprint.py --trace}: the same
command line as C{twistd}, with Python's allocations traced from the first
import, and a snapshot written on C{SIGUSR2} to the path in the
C{FOOTPRINT_SNAPSHOT} environment variable (read only here, never by the
orchestrator), and beside it C{PATH.peak}: the traced bytes now and at
their peak.

Usage: python bench/_traced.py -n --pidfile= orchestrator --config PATH
"""

import os
import signal
import sys
import tracemalloc

tracemalloc.start(int(os.environ.get("FOOTPRINT_FRAMES", "1")))


def _dump(signum, frame):
    path = os.environ["FOOTPRINT_SNAPSHOT"]
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),))
    current, peak = tracemalloc.get_traced_memory()
    with open(path + ".peak", "w") as f:
        f.write(f"{current} {peak}\n")
    snapshot.dump(path + ".part")
    os.replace(path + ".part", path)


signal.signal(signal.SIGUSR2, _dump)

from twisted.scripts.twistd import run  # noqa: E402

sys.argv[0] = "twistd"
run()
