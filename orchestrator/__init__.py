"""
orchestrator: a process supervisor for one host, built on Twisted.

The package is organised in small modules with one job each; see
C{docs/architecture.md} for the map.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
