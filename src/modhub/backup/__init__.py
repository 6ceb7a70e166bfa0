"""Backup and restore: one file holding a consistent snapshot of an installation."""

from modhub.backup.archive import FORMAT_VERSION, BackupError, Manifest
from modhub.backup.restore import restore_backup
from modhub.backup.snapshot import take_backup

__all__ = ["FORMAT_VERSION", "BackupError", "Manifest", "restore_backup", "take_backup"]
