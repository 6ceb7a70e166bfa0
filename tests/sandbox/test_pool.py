"""The worker pool with real workers: answers, handler errors, and hostile handlers.

Every test runs its own pool on its own event loop (`with_pool`), in whichever isolation
this machine gives (bubblewrap when installed, else rlimits); test_isolation.py covers
what only bubblewrap adds. Hostile handlers are in modules/hostile/handlers/attacks.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modhub.errors import (
    BadWorkerResponse,
    HandlerFailed,
    HandlerMissing,
    HandlerTimeout,
    WorkerUnavailable,
)
from modhub.sandbox import ModuleRuntime, PoolLimits, WorkerPool
from modhub.sandbox.launch import module_uid
from tests.sandbox.conftest import (
    ATTACKS,
    Sandbox,
    alive,
    answer_json,
    eventually,
    fork_bomb_contained,
    processes_of,
    route,
    unique,
    wait_until,
    with_pool,
)

OK = f"{ATTACKS}:ok"


def worker_pid(pool: WorkerPool, key: str) -> int:
    """Return the pid of the live worker `key` (bwrap's, under bubblewrap)."""
    return pool.workers[key].process.pid


async def recovered(pool: WorkerPool, runtime: ModuleRuntime, timeout: float = 15) -> Any:
    """Wait out the backoff; return the first good answer of the restarted worker."""
    return await eventually(
        lambda: answer_json(pool, runtime, OK), timeout, f"{runtime.key} to answer again"
    )


# -- answers -------------------------------------------------------------------------------


def test_route_answers_status_headers_and_body(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("answers")

    async def body(pool: WorkerPool) -> None:
        answer = await route(
            pool,
            runtime,
            f"{ATTACKS}:echo",
            method="POST",
            path="/vms/42",
            params={"id": "42"},
            query={"q": "x"},
            config={"greeting": "hi", "token": "s3cret"},
        )
        assert answer["status"] == 201
        assert answer["headers"] == {"X-Echo": "yes"}
        assert answer["contentType"] == "application/json"
        assert json.loads(answer["body"]) == {
            "method": "POST",
            "path": "/vms/42",
            "pathParams": {"id": "42"},
            "query": {"q": "x"},
            "user": "ada",
            "config": {"greeting": "hi", "token": "s3cret"},
        }
        raw = await route(pool, runtime, f"{ATTACKS}:raw")
        assert (raw["status"], raw["body"], raw["contentType"]) == (
            200,
            b"\x00\x01binary",
            "application/octet-stream",
        )

    with_pool(sandbox, body)


def test_sync_and_async_handlers(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("both-kinds")

    async def body(pool: WorkerPool) -> None:
        sync, async_ = await asyncio.gather(
            answer_json(pool, runtime, OK),
            answer_json(pool, runtime, f"{ATTACKS}:async_ok", query={"a": "1"}),
        )
        assert sync["ok"] is True
        assert async_ == {"async": True, "query": {"a": "1"}}
        # Many at once share one worker, sync handlers in threads, async ones on a loop.
        answers = await asyncio.gather(
            *(answer_json(pool, runtime, f"{ATTACKS}:async_ok") for _ in range(10)),
            *(answer_json(pool, runtime, OK) for _ in range(10)),
        )
        assert len({a["pid"] for a in answers if "pid" in a}) == 1
        assert list(pool.workers) == [runtime.key]

    with_pool(sandbox, body)


def test_handler_exception_is_logged_not_answered(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("raiser")

    async def body(pool: WorkerPool) -> None:
        with pytest.raises(HandlerFailed) as caught:
            await route(pool, runtime, f"{ATTACKS}:boom")
        error = caught.value
        assert error.status == 500
        assert "secret detail" not in str(error)
        assert "secret detail" not in json.dumps(error.extra, default=str)
        await wait_until(
            lambda: "ValueError: boom: the secret detail" in "\n".join(pool.logs["raiser"]),
            5,
            "the traceback in the module log",
        )
        log = "\n".join(pool.logs["raiser"])
        assert "Traceback (most recent call last)" in log
        assert "attacks.py" in log
        # The worker survives a handler's exception.
        assert (await answer_json(pool, runtime, OK))["ok"] is True
        assert pool.stats()["failures"] == {}

    with_pool(sandbox, body)


def test_missing_handler(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("missing")

    async def body(pool: WorkerPool) -> None:
        with pytest.raises(HandlerMissing, match=r"nowhere\.py"):
            await route(pool, runtime, "handlers/nowhere.py")
        with pytest.raises(HandlerMissing, match="no_such_function"):
            await route(pool, runtime, f"{ATTACKS}:no_such_function")
        with pytest.raises(HandlerMissing):
            await route(pool, runtime, "../../../../etc/passwd")
        assert (await answer_json(pool, runtime, OK))["ok"] is True

    with_pool(sandbox, body)


# -- hung, crashed and killed workers --------------------------------------------------------


def test_timeout_kills_and_restarts_the_worker(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("slowpoke", timeout_ms=1500)

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, runtime, OK)
        old = worker_pid(pool, runtime.key)
        started = time.monotonic()
        with pytest.raises(HandlerTimeout) as caught:
            await route(pool, runtime, f"{ATTACKS}:sleepy", query={"seconds": "30"})
        assert caught.value.status == 504
        assert time.monotonic() - started < 10
        assert not alive(old)
        # One timeout is one failure (not one for the call and one for the reader).
        assert pool.stats()["failures"] == {runtime.key: 1}
        answer = await recovered(pool, runtime)
        assert worker_pid(pool, runtime.key) != old
        assert answer["ok"] is True

    with_pool(sandbox, body)


@pytest.mark.parametrize("attack", ["exit3", "segfault"])
def test_crash_answers_503_during_backoff_then_recovers(sandbox: Sandbox, attack: str) -> None:
    runtime = sandbox.runtime(f"crasher-{attack}")

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, runtime, OK)
        old = worker_pid(pool, runtime.key)
        with pytest.raises(WorkerUnavailable) as caught:
            await route(pool, runtime, f"{ATTACKS}:{attack}")
        assert caught.value.status == 503
        assert not alive(old)
        # During the backoff the module answers 503 at once, saying when to retry.
        with pytest.raises(WorkerUnavailable) as during:
            await route(pool, runtime, OK)
        assert during.value.status == 503
        assert 0 < during.value.extra["retryAfter"] <= 2.0
        assert runtime.key not in pool.workers
        code = "exit code 3" if attack == "exit3" else "exit code"
        assert code in pool.health[runtime.key].last_error
        await recovered(pool, runtime)
        assert worker_pid(pool, runtime.key) != old

    with_pool(sandbox, body, PoolLimits(backoff_base=2.0))


def test_concurrent_requests_fail_fast_when_the_worker_crashes(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("crash-many", max_concurrency=2)

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, runtime, OK)
        started = time.monotonic()
        results = await asyncio.gather(
            route(pool, runtime, f"{ATTACKS}:sleepy", query={"seconds": "20"}),
            route(pool, runtime, f"{ATTACKS}:exit3"),
            *(route(pool, runtime, OK) for _ in range(4)),  # queued behind the slots
            return_exceptions=True,
        )
        assert time.monotonic() - started < 10
        assert isinstance(results[0], WorkerUnavailable)
        assert isinstance(results[1], WorkerUnavailable)
        for result in results[2:]:
            if isinstance(result, dict):
                assert result["status"] == 200
            else:
                assert isinstance(result, WorkerUnavailable)

    with_pool(sandbox, body)


@pytest.mark.parametrize("attack", ["memory_bomb", "memory_creep"])
def test_memory_bomb_is_contained(sandbox: Sandbox, attack: str) -> None:
    runtime = sandbox.runtime(f"hog-{attack.replace('_', '-')}", memory_mb=256)

    async def body(pool: WorkerPool) -> None:
        with pytest.raises((HandlerFailed, WorkerUnavailable)):
            await route(pool, runtime, f"{ATTACKS}:{attack}")
        if runtime.key in pool.workers:  # MemoryError: the worker lived on
            assert "MemoryError" in "\n".join(pool.logs[runtime.name])
        assert (await recovered(pool, runtime))["ok"] is True

    with_pool(sandbox, body)


def test_endless_loop_times_out_and_the_worker_is_killed(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime(unique("spinner"), timeout_ms=1500)

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, runtime, OK)
        old = worker_pid(pool, runtime.key)
        with pytest.raises(HandlerTimeout):
            await route(pool, runtime, f"{ATTACKS}:endless")
        assert not alive(old)
        if fork_bomb_contained():  # under bubblewrap the module has a uid of its own
            assert processes_of(module_uid(runtime.name)) == []
        assert (await recovered(pool, runtime))["ok"] is True

    with_pool(sandbox, body)


def test_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    if not fork_bomb_contained():
        pytest.skip(
            "RLIMIT_NPROC bounds a fork bomb only for the module's own uid, which workers "
            "get under bubblewrap when modhub runs as root"
        )
    bomber = sandbox.runtime(unique("bomber"), timeout_ms=2000)
    bystander = sandbox.runtime(unique("bystander"))
    uid = module_uid(bomber.name)

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, bystander, OK)
        attack = asyncio.create_task(route(pool, bomber, f"{ATTACKS}:fork_bomb"))
        most, served = 0, 0
        while not attack.done():
            assert (await answer_json(pool, bystander, OK))["ok"] is True
            served += 1
            most = max(most, len(processes_of(uid)))
            await asyncio.sleep(0.02)
        with pytest.raises((HandlerTimeout, WorkerUnavailable)):
            await attack
        assert served > 0
        assert 1 < most <= 64  # RLIMIT_NPROC, set by the worker
        await wait_until(lambda: not processes_of(uid), 5, f"no process of uid {uid}")
        assert (await answer_json(pool, bystander, OK))["ok"] is True
        assert (await recovered(pool, bomber))["ok"] is True

    with_pool(sandbox, body)


def test_huge_response_is_refused_without_buffering_it(sandbox: Sandbox) -> None:
    # 1 GB: enough for the worker to encode its 100 MB answer (140 MB on the wire), so
    # that the pool's size check, not the worker's memory limit, is what refuses it.
    runtime = sandbox.runtime("bigmouth", memory_mb=1024, timeout_ms=60_000)
    peak = RssPeak()

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, runtime, OK)
        with peak, pytest.raises((BadWorkerResponse, WorkerUnavailable)) as caught:
            await route(pool, runtime, f"{ATTACKS}:huge_response")
        assert "over the" in str(caught.value) or caught.value.status == 502
        assert (await recovered(pool, runtime))["ok"] is True

    with_pool(sandbox, body)
    # The pool reads the length first and stops: it never holds the 140 MB frame.
    assert peak.growth < 80 * 1024 * 1024, f"RSS grew by {peak.growth / 2**20:.0f} MB"


def test_print_does_not_corrupt_the_protocol(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("chatty")

    async def body(pool: WorkerPool) -> None:
        for _ in range(3):
            assert await answer_json(pool, runtime, f"{ATTACKS}:noisy") == {"quiet": False}
        assert (await answer_json(pool, runtime, OK))["ok"] is True
        await wait_until(
            lambda: "raw bytes on file descriptor 1" in pool.logs["chatty"],
            5,
            "the handler's output in the module log",
        )
        log = list(pool.logs["chatty"])
        assert "hello from print()" in log
        assert "and some on stderr" in log
        assert pool.stats()["failures"] == {}

    with_pool(sandbox, body)


def test_an_over_long_log_line_does_not_silence_the_log(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("rambler")

    async def body(pool: WorkerPool) -> None:
        assert await answer_json(pool, runtime, f"{ATTACKS}:long_log_line") == {"logged": True}
        await wait_until(
            lambda: "after the long line" in pool.logs["rambler"], 10, "the log to go on"
        )
        cut = "y" * 16 * 1024 + f" … [truncated {17 * 1024 * 1024 - 16 * 1024} bytes]"
        assert sum(line == cut for line in pool.logs["rambler"]) == 1
        assert max(len(line) for line in pool.logs["rambler"]) == len(cut)
        assert await answer_json(pool, runtime, f"{ATTACKS}:noisy") == {"quiet": False}
        await wait_until(lambda: "hello from print()" in pool.logs["rambler"], 5, "more log")

    with_pool(sandbox, body)


# -- the pool's bounds ---------------------------------------------------------------------


def test_idle_workers_stop(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("sleeper")

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, runtime, OK)
        pid = worker_pid(pool, runtime.key)
        await wait_until(lambda: not pool.workers, 5, "the idle worker to stop")
        await wait_until(lambda: not alive(pid), 5, "its process to end")
        assert pool.stats()["failures"] == {}  # an idle stop is no failure
        assert (await answer_json(pool, runtime, OK))["ok"] is True  # started again

    with_pool(sandbox, body, PoolLimits(idle_seconds=0.3))


def test_idle_worker_with_a_request_in_flight_is_kept(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("busy-sleeper")

    async def body(pool: WorkerPool) -> None:
        answer = await answer_json(pool, runtime, f"{ATTACKS}:sleepy", query={"seconds": "1.2"})
        assert answer["slept"] == 1.2

    with_pool(sandbox, body, PoolLimits(idle_seconds=0.2))


def test_live_worker_bound_evicts_the_least_recently_used(sandbox: Sandbox) -> None:
    a, b, c = (sandbox.runtime(name) for name in ("lru-a", "lru-b", "lru-c"))

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, a, OK)
        await answer_json(pool, b, OK)
        await answer_json(pool, a, OK)  # b is now the least recently used
        evicted = worker_pid(pool, b.key)
        await answer_json(pool, c, OK)
        assert set(pool.workers) == {a.key, c.key}
        assert not alive(evicted)
        await answer_json(pool, b, OK)  # b comes back; a is now the LRU
        assert set(pool.workers) == {b.key, c.key}
        assert pool.stats()["failures"] == {}

    with_pool(sandbox, body, PoolLimits(max_workers=2))


def test_live_worker_bound_never_evicts_a_busy_worker(sandbox: Sandbox) -> None:
    a, b = sandbox.runtime("only-a"), sandbox.runtime("only-b")

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, a, OK)
        slow = asyncio.create_task(
            answer_json(pool, a, f"{ATTACKS}:sleepy", query={"seconds": "2"})
        )
        await wait_until(lambda: pool.workers[a.key].busy, 5, "the slow request to start")
        with pytest.raises(WorkerUnavailable, match="busy"):
            await route(pool, b, OK)
        assert not slow.done()
        assert (await slow)["slept"] == 2.0
        assert (await answer_json(pool, b, OK))["ok"] is True
        assert list(pool.workers) == [b.key]

    with_pool(sandbox, body, PoolLimits(max_workers=1))


def test_retire_soon_lets_the_old_version_finish(sandbox: Sandbox) -> None:
    v1 = sandbox.runtime("upgraded", "1.0.0")
    v2 = sandbox.runtime("upgraded", "2.0.0")

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, v1, OK)
        await answer_json(pool, v2, OK)
        old = worker_pid(pool, v1.key)
        slow = asyncio.create_task(
            answer_json(pool, v1, f"{ATTACKS}:sleepy", query={"seconds": "2"})
        )
        await wait_until(lambda: pool.workers[v1.key].busy, 5, "the slow request to start")
        # The registry listener calls it from a request thread, not the loop's.
        await asyncio.to_thread(pool.retire_soon, {"upgraded": "2.0.0", "other": "1.0.0"})
        await wait_until(lambda: v1.key not in pool.workers, 5, "v1 to retire")
        assert alive(old)  # no new request goes to v1, but its request in flight goes on
        assert not slow.done()
        assert (await slow)["slept"] == 2.0
        await wait_until(lambda: not alive(old), 5, "v1's worker to stop")
        assert list(pool.workers) == [v2.key]
        assert pool.stats()["failures"] == {}

    with_pool(sandbox, body)


def test_a_retiring_worker_answers_the_requests_waiting_for_its_slots(sandbox: Sandbox) -> None:
    # One slot: one request runs, two wait for the slot when the upgrade retires v1.
    v1 = sandbox.runtime("queued", "1.0.0", max_concurrency=1)

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, v1, OK)
        calls = [
            asyncio.create_task(answer_json(pool, v1, f"{ATTACKS}:sleepy", query={"seconds": "1"}))
            for _ in range(3)
        ]
        await wait_until(lambda: pool.workers[v1.key].waiting == 2, 5, "two requests to queue")
        await asyncio.to_thread(pool.retire_soon, {"queued": "2.0.0"})
        answers = await asyncio.gather(*calls)
        assert [answer["slept"] for answer in answers] == [1.0, 1.0, 1.0]
        assert pool.stats()["failures"] == {}

    with_pool(sandbox, body)


class RssPeak:
    """Samples this process's resident memory in a thread; `growth` is peak minus start."""

    def __init__(self) -> None:
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    def __enter__(self) -> RssPeak:
        self.start = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def test_workers_of_a_closed_pool_are_gone(sandbox: Sandbox) -> None:
    runtime = sandbox.runtime("closed")
    pids: list[int] = []

    async def body(pool: WorkerPool) -> None:
        await answer_json(pool, runtime, OK)
        pids.append(worker_pid(pool, runtime.key))

    with_pool(sandbox, body)
    assert pids
    assert not alive(pids[0])
    assert os.getpid() != pids[0]


def test_a_request_larger_than_a_pipe_read_reaches_the_handler(sandbox: Sandbox) -> None:
    # A 1 MiB body travels as one frame of about 1.4 MB: the worker reads a pipe 64 KiB
    # at a time and must put the frame together (it took a short read for the end).
    runtime = sandbox.runtime(unique("big-body"))

    async def body(pool: WorkerPool) -> None:
        answer = await route(pool, runtime, f"{ATTACKS}:echo", method="POST", body="x" * 1_000_000)
        assert answer["status"] == 201
        assert pool.stats()["failures"] == {}

    with_pool(sandbox, body)
