"""What operators watch: request-scoped log fields, JSON log lines, OpenTelemetry traces.

Nothing here imports the rest of modhub: every layer may use it.
"""

from __future__ import annotations

from modhub.telemetry.context import (
    REQUEST_ID_HEADER,
    bind,
    current,
    note,
    request_id,
    request_id_from,
)

__all__ = ["REQUEST_ID_HEADER", "bind", "current", "note", "request_id", "request_id_from"]
