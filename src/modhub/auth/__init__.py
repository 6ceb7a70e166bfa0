"""Users, roles, permissions, passwords, access tokens and API tokens."""

from modhub.auth.permissions import Permission, Principal
from modhub.auth.service import ApiTokenInfo, AuthService

__all__ = ["ApiTokenInfo", "AuthService", "Permission", "Principal"]
