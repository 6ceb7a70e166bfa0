"""The store's errors. Their class names are part of the worker protocol: a handler gets
`modhub.sdk.<same name>`, so keep them as they are."""

from __future__ import annotations

from modhub.errors import ModhubError


class StoreError(ModhubError):
    """The store refused an operation; nothing was changed."""

    status, title, kind = 422, "Store error", "store-error"


class VersionConflict(StoreError):
    """`if_version` is not the key's current version."""

    status, title, kind = 409, "Version conflict", "version-conflict"


class QuotaExceeded(StoreError):
    """The write would take the module past its storage limit."""

    status, title, kind = 507, "Storage quota exceeded", "quota-exceeded"


class ValueTooLarge(StoreError):
    """The value is larger than the largest allowed."""

    status, title, kind = 413, "Value too large", "value-too-large"


class InvalidKey(StoreError):
    """The key is empty, not a string, or too long."""

    status, title, kind = 422, "Invalid key", "invalid-key"


class InvalidValue(StoreError):
    """The value is not JSON, or an argument is out of range."""

    status, title, kind = 422, "Invalid value", "invalid-value"
