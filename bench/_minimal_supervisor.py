"""
The floor for respawn latency: a blocking C{waitpid} and an immediate
C{posix_spawn} (own session), nothing else.  Not a supervisor anyone should
use; it shows how much of a respawn is the kernel ending the old child and
starting the new one.

Usage: python _minimal_supervisor.py ARGV...  (at most 100000 respawns)
"""

import os
import sys

argv = sys.argv[1:]
for _ in range(100000):
    pid = os.posix_spawn(argv[0], argv, os.environ, setsid=True)
    os.waitpid(pid, 0)
