"""Users, roles, permissions, passwords, access tokens and API tokens."""

from modhub.auth.permissions import Permission, Principal
from modhub.auth.service import AuthService

__all__ = ["AuthService", "Permission", "Principal"]
