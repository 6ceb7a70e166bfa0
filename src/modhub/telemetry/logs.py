"""Log lines: plain text by default, one JSON object a line with `MODHUB_LOG_FORMAT=json`.

Plain `json` rather than python-json-logger: the record is a dozen fixed keys, most of them
from the request's context (`telemetry/context.py`) rather than from the record, and the
names are the API's camelCase (`requestId`, `durationMs`); a small formatter says that more
plainly than configuring a library's renames, and costs no dependency.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

from modhub.telemetry import tracing
from modhub.telemetry.context import current

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
# The request's fields, in this order, after time, level, logger and message.
FIELDS = (
    "requestId",
    "user",
    "module",
    "route",
    "method",
    "status",
    "durationMs",
    "traceId",
    "spanId",
)
# One encoder for every line: json.dumps with options builds a new one a call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, logger, message, the request's
    fields when it serves one (request id, user, module, route, status, duration), the trace
    and span ids when tracing is on, and the traceback if any.

    A record may carry more fields in `extra={"fields": {...}}`; they win over the request's.
    """

    _stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = {**current(), **(getattr(record, "fields", None) or {})}
        for key in FIELDS:
            if fields.get(key) is not None:
                line[key] = fields[key]
        line.update(_trace_ids())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(line)

    def _time(self, created: float) -> str:
        """Return `created` in ISO 8601, UTC, to the millisecond (the second's text is kept:
        a busy server writes many lines a second)."""
        second = int(created)
        kept, prefix = self._stamp  # one attribute: threads never see half an update
        if second != kept:
            prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._stamp = (second, prefix)
        return f"{prefix}.{int((created - second) * 1000):03d}+00:00"


def _trace_ids() -> dict[str, str]:
    if tracing.tracer() is None:
        return {}
    return tracing.current_ids()


def formatter(log_format: LogFormat) -> logging.Formatter:
    """Return the formatter of a log format."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(log_format: LogFormat, level: int = logging.INFO) -> None:
    """Send the root logger's records to stderr in `log_format` (replacing its handlers)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def uvicorn_config(log_format: LogFormat, base: dict[str, Any]) -> dict[str, Any]:
    """Return uvicorn's `log_config` (a copy of `base`, its LOGGING_CONFIG) with modhub's
    loggers at INFO, and every line in `log_format`."""
    import copy

    logs = copy.deepcopy(base)
    if log_format == "json":
        for name in list(logs["formatters"]):
            logs["formatters"][name] = {"()": "modhub.telemetry.logs.JsonFormatter"}
        logs["formatters"]["modhub"] = {"()": "modhub.telemetry.logs.JsonFormatter"}
    else:
        logs["formatters"]["modhub"] = {"format": TEXT_FORMAT}
    logs["handlers"]["modhub"] = {
        "formatter": "modhub",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    logs["loggers"]["modhub"] = {"handlers": ["modhub"], "level": "INFO", "propagate": False}
    return logs
