"""Each module's own key-value store, and how workers reach it."""

from modhub.store.errors import (
    InvalidKey,
    InvalidValue,
    QuotaExceeded,
    StoreError,
    ValueTooLarge,
    VersionConflict,
)
from modhub.store.service import (
    DEFAULT_STORAGE_MB,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Entry,
    ModuleStore,
    Page,
    Usage,
)

__all__ = [
    "DEFAULT_STORAGE_MB",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "Entry",
    "InvalidKey",
    "InvalidValue",
    "ModuleStore",
    "Page",
    "QuotaExceeded",
    "StoreError",
    "Usage",
    "ValueTooLarge",
    "VersionConflict",
]
