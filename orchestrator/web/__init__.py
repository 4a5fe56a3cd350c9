"""
The admin API: a twisted.web resource tree served on C{admin.listen}.
"""

from orchestrator.web.service import AdminService, buildRoot

__all__ = ["AdminService", "buildRoot"]
