"""The breaks `make mutation` applies, one at a time: small, realistic mistakes in the
security- and correctness-critical functions, each with the tests that must catch it.

A break replaces `old` (found exactly once in `path`) with `new`. Add one for every bug a
test exists to prevent; a break no test catches is a gap to close, not a break to drop.
A break that cannot change what the code does is not listed: removing the `..` check of
UI file paths alone is one, since the hidden-file rule refuses a `..` part too (each guard
holds without the other).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Break:
    """One textual change to the source, and the tests that must fail on it."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


DISPATCH = "src/modhub/routes/dispatch.py"
GRAPH = "src/modhub/registry/graph.py"
CLAIM = "src/modhub/jobs/claim.py"
STORE = "src/modhub/jobs/store.py"
PIPELINE = "src/modhub/jobs/pipeline.py"
PERMISSIONS = "src/modhub/auth/permissions.py"
THROTTLE = "src/modhub/auth/throttle.py"
WEB = "src/modhub/web/router.py"
SYNC = "src/modhub/routes/sync.py"

BREAKS: tuple[Break, ...] = (
    Break(
        "a HEAD request skips the route's permission check",
        DISPATCH,
        "    for permission in route.permissions:\n",
        '    for permission in route.permissions if method != "HEAD" else ():\n',
        ("tests/routes/test_head_permissions.py", "tests/api/test_permission_coverage.py"),
    ),
    Break(
        "module routes check no permission at all",
        DISPATCH,
        "        if not principal.can(permission):\n",
        "        if not principal.can(permission) and False:\n",
        ("tests/routes/test_dispatch.py", "tests/routes/test_head_permissions.py"),
    ),
    Break(
        "a scope wildcard grants every scope",
        PERMISSIONS,
        '        return f"{scope}:*" in self.permissions\n',
        '        return any(p.endswith(":*") for p in self.permissions)\n',
        ("tests/auth/test_service.py::test_principal_can",),
    ),
    Break(
        "the cycle search follows only the first dependency",
        GRAPH,
        "            found = walk(nxt)\n            if found:\n                return found\n",
        "            return walk(nxt)\n",
        ("tests/registry/test_cycles_any_edge.py",),
    ),
    Break(
        "the claiming round takes runs that are not queued",
        CLAIM,
        '_READY = (JobRun.status == "queued", JobRun.not_before <= bindparam("now"))',
        '_READY = (JobRun.not_before <= bindparam("now"),)',
        ("tests/jobs/test_claim_race.py",),
    ),
    Break(
        "the PostgreSQL round's limit forgets the module's running runs",
        PIPELINE,
        '    " WHERE k.nth <= %(per_module)s - coalesce(r.n, 0)"',
        '    " WHERE k.nth <= %(per_module)s"',
        ("tests/jobs/test_round_claim.py::test_the_limit_counts_the_running_runs_of_every_runner",),
    ),
    Break(
        "RunStore.claim takes a run that is not queued",
        STORE,
        '                .where(JobRun.id == run_id, JobRun.status == "queued")\n'
        '                .values(status="running", started_at=now, owner=owner)\n',
        "                .where(JobRun.id == run_id)\n"
        '                .values(status="running", started_at=now, owner=owner)\n',
        ("tests/jobs/test_claim_race.py",),
    ),
    Break(
        "a module's limit lets one run too many through",
        CLAIM,
        "        if running.get(claim.module, 0) >= per_module:\n",
        "        if running.get(claim.module, 0) > per_module:\n",
        ("tests/jobs/test_cluster.py::test_claimers_racing_for_one_module_never_pass_its_limit",),
    ),
    Break(
        "a lockout lasts one second longer than set",
        THROTTLE,
        "        expired = and_(table.locked_until.is_not(None), table.locked_until <= now_p)\n",
        "        expired = and_(table.locked_until.is_not(None), table.locked_until < now_p)\n",
        ("tests/auth/test_lockout_clock.py",),
    ),
    Break(
        "a lockout lasts half as long as set",
        THROTTLE,
        "        until = now + timedelta(seconds=self.settings.login_lockout_seconds)\n",
        "        until = now + timedelta(seconds=self.settings.login_lockout_seconds / 2)\n",
        ("tests/auth/test_lockout_clock.py",),
    ),
    Break(
        "the login limit lets one more check through",
        THROTTLE,
        "                        (count < limit, None),\n",
        "                        (count <= limit, None),\n",
        ("tests/auth/test_lockout_clock.py",),
    ),
    Break(
        "hidden files of a UI folder are served",
        WEB,
        '        and not any(part.startswith(".") for part in relative.parts)\n',
        "        and True\n",
        ("tests/web/test_ui_traversal.py",),
    ),
    Break(
        "any file under the module's root is a UI file",
        WEB,
        "        str(relative.parent) not in folders\n"
        '        and not any(relative.is_relative_to(f) for f in folders if f != ".")\n',
        "        False\n",
        ("tests/web/test_ui_traversal.py",),
    ),
    Break(
        "the navigation lists pages the caller may not open",
        WEB,
        "            if page is None or not all(principal.can(p) for p in page.permissions):\n",
        "            if page is None:\n",
        ("tests/web/test_navigation_permissions.py",),
    ),
    Break(
        "the navigation needs only one of a page's permissions",
        WEB,
        "            if page is None or not all(principal.can(p) for p in page.permissions):\n",
        "            if page is None or page.permissions and not any(\n"
        "                principal.can(p) for p in page.permissions\n"
        "            ):\n",
        ("tests/web/test_navigation_permissions.py",),
    ),
    Break(
        "the cross-process poller never sees another process's change",
        SYNC,
        "                if seen != self._fingerprint:\n",
        "                if seen != self._fingerprint and False:\n",
        ("tests/cluster/test_notify.py::test_with_the_listener_off_the_poll_still_catches_up",),
    ),
)
