"""The events' errors. `EventInvalid`'s class name is part of the worker protocol: the
emitting handler gets `modhub.sdk.EventInvalid`, so keep it as it is."""

from __future__ import annotations

from modhub.errors import ModhubError


class EventInvalid(ModhubError):
    """An event was refused: its name is not declared, or its payload breaks the schema;
    the message names the field. Nothing was stored."""

    status, title, kind = 422, "Invalid event", "event-invalid"
