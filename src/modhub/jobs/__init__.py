"""Jobs: cron schedules fired once per tick, runs in module workers, retries, history."""

from modhub.jobs.runner import JobLimits, JobRunner
from modhub.jobs.store import RunPage, RunStore, RunView

__all__ = ["JobLimits", "JobRunner", "RunPage", "RunStore", "RunView"]
