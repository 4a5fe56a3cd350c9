"""
C{orchestratorctl}: a thin command-line client of the admin API.
(Filled in with the admin API.)
"""

import sys


def main(argv=None) -> int:
    print("orchestratorctl: not available yet", file=sys.stderr)
    return 2
