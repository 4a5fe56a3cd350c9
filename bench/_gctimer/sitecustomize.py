"""
Bench only: C{bench/status_profile.py} puts this folder on the
C{PYTHONPATH} of the orchestrator it measures, so Python imports this
module at start-up.  When C{BENCH_GC_PAUSES} names a file, every pass of
the cyclic garbage collector is timed (C{gc.callbacks}) and the passes,
C{[monotonic time at the end, generation, seconds, objects collected]},
are written there as JSON when the process exits.  At most C{LIMIT}
passes are kept (a counted, bounded list: the rest only raise
C{dropped}).  With C{BENCH_GC_FREEZE_AFTER} set to seconds, a timer
thread calls C{gc.freeze()} once after that long (an experiment: what
freezing everything built at start-up would do to the full collections).
"""

import atexit
import gc
import json
import os
import time

LIMIT = 200_000

_path = os.environ.get("BENCH_GC_PAUSES")
if _path:
    _passes: list = []
    _began = [0.0]
    _dropped = [0]

    def _timed(phase, info):
        now = time.monotonic()
        if phase == "start":
            _began[0] = now
        elif len(_passes) < LIMIT:
            _passes.append((now, info["generation"], now - _began[0], info.get("collected", 0)))
        else:
            _dropped[0] += 1

    def _write():
        with open(_path, "w") as f:
            json.dump({"passes": _passes, "dropped": _dropped[0], "frozen": gc.get_freeze_count(),
                       "tracked": len(gc.get_objects()), "counts": gc.get_count()}, f)

    gc.callbacks.append(_timed)
    atexit.register(_write)

    if os.environ.get("BENCH_GC_FREEZE_AFTER"):
        import threading

        _freezer = threading.Timer(float(os.environ["BENCH_GC_FREEZE_AFTER"]), gc.freeze)
        _freezer.daemon = True
        _freezer.start()
