"""Events: modules publish and subscribe; every subscriber gets each event at least once,
in emit order per emitting module, on whichever node claims it (docs/architecture.md,
"Events")."""

from modhub.events.catalog import Catalog, Subscriber
from modhub.events.dispatcher import Dispatcher, DispatchLimits
from modhub.events.errors import EventInvalid
from modhub.events.service import EventService
from modhub.events.store import EventStore

__all__ = [
    "Catalog",
    "DispatchLimits",
    "Dispatcher",
    "EventInvalid",
    "EventService",
    "EventStore",
    "Subscriber",
]
