"""
The admin API: a twisted.web resource tree served on C{admin.listen}.

L{buildRoot} builds the guarded tree (routes in L{orchestrator.web.api},
checks in L{orchestrator.web.security}); L{AdminService} serves it on an
L{AdminSite}.
"""

from orchestrator.web.security import AdminSite
from orchestrator.web.server import AdminService, buildRoot

__all__ = ["AdminService", "AdminSite", "buildRoot"]
