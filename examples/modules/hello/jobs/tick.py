"""Job `tick`: report when it ran."""


def handler(context):
    return {"ranAt": context.scheduled_time.isoformat(), "attempt": context.attempt}
