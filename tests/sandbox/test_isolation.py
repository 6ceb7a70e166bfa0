"""What a module cannot reach from its worker: the probes in modules/probe report what
happened when they tried, and the tests check every attempt failed.

The layout is the real one: the platform's key file and database sit in the data dir,
module code in `data_dir/modules/<name>/<version>`. Most of these guarantees come from
bubblewrap: those tests skip without it (and fail under MODHUB_REQUIRE_SERVICES=1).
The rlimits fallback is tested at the end: as root it is refused (module code would
run as root), unprivileged it runs handlers within their limits.
"""

from __future__ import annotations

import ast
import contextlib
import os
import socket
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from modhub.errors import HandlerFailed, WorkerUnavailable
from modhub.lifecycle.environment import PackageIndex, create_env
from modhub.sandbox import ModuleRuntime, WorkerPool, isolation, launch
from modhub.sandbox.launch import module_uid
from tests.conftest import service_missing
from tests.packages import build_pth_wheel
from tests.sandbox.conftest import (
    ATTACKS,
    PROBE,
    Sandbox,
    answer_json,
    eventually,
    unique,
    with_pool,
)

KEY = "platform-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
DB_SECRET = "top-secret-row-in-the-platform-database"
DENIED = {"FileNotFoundError", "PermissionError"}
ALLOWED_ENV = {
    *launch.SAFE_ENV,
    "HOME",
    "TMPDIR",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "MALLOC_ARENA_MAX",
    "PWD",
    "LC_CTYPE",  # Python may set it when it coerces the C locale
}


@pytest.fixture
def bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip (fail under MODHUB_REQUIRE_SERVICES=1) unless workers get bubblewrap here."""
    monkeypatch.delenv("MODHUB_SANDBOX", raising=False)
    if isolation() != "bubblewrap":
        service_missing(
            "bubblewrap (bwrap) is not installed, so module workers run with rlimits only; "
            "install it (apt-get install bubblewrap, or `make system-deps`) to test "
            "the namespace isolation"
        )


@pytest.fixture
def platform(sandbox: Sandbox) -> Sandbox:
    """Put the platform's key file and database beside the module code, and another
    module's code and an older version of the probe, as an installed platform has them."""
    (sandbox.data_dir / "secret.key").write_text(KEY)
    (sandbox.data_dir / "secret.key").chmod(0o600)
    with contextlib.closing(sqlite3.connect(sandbox.data_dir / "modhub.db")) as db:
        db.execute("CREATE TABLE secrets (value TEXT)")
        db.execute("INSERT INTO secrets VALUES (?)", (DB_SECRET,))
        db.commit()
    other = sandbox.code("other", source="good")
    (other / "private.txt").write_text("another module's data")
    sandbox.code("probe", "0.9.0", source="probe")
    return sandbox


def probe(sandbox: Sandbox, name: str = "probe", **limits: object) -> ModuleRuntime:
    """Return the runtime of a probe module named `name`."""
    return sandbox.runtime(name, source="probe", **limits)  # type: ignore[arg-type]


async def ask(pool: WorkerPool, runtime: ModuleRuntime, what: str, **body: object) -> object:
    """Run probe `what` (POST with a JSON body, or GET without) and return its report."""
    if body:
        return await answer_json(pool, runtime, f"{PROBE}:{what}", method="POST", body=body)
    return await answer_json(pool, runtime, f"{PROBE}:{what}")


def failed(report: object) -> str:
    """Return the exception class of a failed attempt (fail the test if it succeeded)."""
    assert isinstance(report, dict)
    assert report["ok"] is False, f"the module managed it: {report}"
    return str(report["error"])


@pytest.mark.usefixtures("bubblewrap")
def test_cannot_read_the_key_file_or_the_database(platform: Sandbox) -> None:
    runtime = probe(platform)
    data = platform.data_dir

    async def body(pool: WorkerPool) -> None:
        reports = await ask(
            pool,
            runtime,
            "read",
            paths=[
                str(data / "secret.key"),
                str(data / "modhub.db"),
                str(data / "modhub.db-wal"),
                str(runtime.code / "handlers" / "probe.py"),
            ],
        )
        assert isinstance(reports, dict)
        assert failed(reports[str(data / "secret.key")]) in DENIED
        assert failed(reports[str(data / "modhub.db")]) in DENIED
        assert failed(reports[str(data / "modhub.db-wal")]) in DENIED
        own = reports[str(runtime.code / "handlers" / "probe.py")]
        assert own["ok"] is True, own  # the probe itself works: it reads its own code
        listed = await ask(pool, runtime, "listdir", paths=[str(data)])
        assert isinstance(listed, dict)
        seen = listed[str(data)]
        assert seen["ok"] is True
        assert "secret.key" not in seen["result"]
        assert "modhub.db" not in seen["result"]

    with_pool(platform, body)


@pytest.mark.usefixtures("bubblewrap")
def test_cannot_write_outside_tmp(platform: Sandbox) -> None:
    runtime = probe(platform)
    data = platform.data_dir
    marker = f"written-{uuid.uuid4().hex}"
    targets = [
        runtime.code / marker,
        runtime.code / "handlers" / marker,
        data / marker,
        data / "modules" / marker,
        data / "runtime" / marker,
        data / "runtime" / "modhub" / "sdk" / marker,
        runtime.env / marker,
        runtime.env / "bin" / marker,
        Path("/") / marker,
        Path("/etc") / marker,
        Path("/usr") / marker,
        Path("/dev/shm") / marker,
        Path("/var/tmp") / marker,
        Path.home() / marker,
    ]

    async def body(pool: WorkerPool) -> None:
        reports = await ask(pool, runtime, "write", paths=[str(t) for t in targets], text="x")
        assert isinstance(reports, dict)
        for target in targets:
            assert failed(reports[str(target)]) in {*DENIED, "OSError"}, target
        inside = await ask(pool, runtime, "write", paths=[f"/tmp/{marker}"])
        assert isinstance(inside, dict)
        assert inside[f"/tmp/{marker}"]["ok"] is True  # its private /tmp is writable

    with_pool(platform, body)
    for target in targets:
        assert not target.exists(), target
    assert not Path(f"/tmp/{marker}").exists()  # that /tmp was the module's own


@pytest.mark.usefixtures("bubblewrap")
def test_cannot_see_other_modules(platform: Sandbox) -> None:
    runtime = probe(platform)
    modules = platform.data_dir / "modules"

    async def body(pool: WorkerPool) -> None:
        listed = await ask(
            pool,
            runtime,
            "listdir",
            paths=[str(modules), str(modules / "probe"), str(modules / "other" / "1.0.0")],
        )
        assert isinstance(listed, dict)
        assert listed[str(modules)] == {"ok": True, "result": ["probe"]}
        assert listed[str(modules / "probe")] == {"ok": True, "result": ["1.0.0"]}
        assert failed(listed[str(modules / "other" / "1.0.0")]) in DENIED
        read = await ask(pool, runtime, "read", paths=[str(modules / "other/1.0.0/private.txt")])
        assert isinstance(read, dict)
        assert failed(read[str(modules / "other/1.0.0/private.txt")]) in DENIED
        # Nor the processes of the platform or of other modules.
        pids = await ask(pool, runtime, "processes")
        assert isinstance(pids, list)
        assert len(pids) <= 3, pids  # bwrap's init, the worker (and a helper at most)

    with_pool(platform, body)


@contextlib.contextmanager
def greeter() -> Iterator[int]:
    """Listen on 127.0.0.1 and greet whoever connects; yield the port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.mark.usefixtures("bubblewrap")
def test_no_network_unless_the_manifest_asks(sandbox: Sandbox) -> None:
    offline = probe(sandbox, unique("offline"))
    online = probe(sandbox, unique("online"), network=True)

    async def body(pool: WorkerPool) -> None:
        with greeter() as port:
            denied = await ask(pool, offline, "connect", host="127.0.0.1", port=port)
            allowed = await ask(pool, online, "connect", host="127.0.0.1", port=port)
        failed(denied)
        assert allowed == {"ok": True, "result": "hello"}

    with_pool(sandbox, body)


@pytest.mark.usefixtures("bubblewrap")
def test_environment_is_scrubbed(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "MODHUB_SECRET_KEY": KEY,
        "MODHUB_DATABASE_URL": "postgresql://modhub:hunter2@db/modhub",
        "MODHUB_ADMIN_PASSWORD": "correct horse battery",
        "AWS_SECRET_ACCESS_KEY": "not-for-modules",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    runtime = probe(sandbox)

    async def body(pool: WorkerPool) -> None:
        seen = await ask(pool, runtime, "identity")
        assert isinstance(seen, dict)
        environ = seen["environ"]
        assert not [name for name in environ if name.startswith("MODHUB_")]
        assert set(environ) <= ALLOWED_ENV, set(environ) - ALLOWED_ENV
        for value in secrets.values():
            assert value not in str(environ)
        assert environ["HOME"] == environ["TMPDIR"] == "/tmp"
        assert seen["cwd"] == str(runtime.code)

    with_pool(sandbox, body)


@pytest.mark.usefixtures("bubblewrap")
def test_runs_as_a_uid_of_its_own(sandbox: Sandbox) -> None:
    a, b = probe(sandbox, "uid-a"), probe(sandbox, "uid-b")

    async def body(pool: WorkerPool) -> None:
        seen_a = await ask(pool, a, "identity")
        seen_b = await ask(pool, b, "identity")
        assert isinstance(seen_a, dict)
        assert isinstance(seen_b, dict)
        for seen in (seen_a, seen_b):
            assert seen["uid"] != 0
            assert seen["euid"] == seen["uid"]
            assert seen["gid"] != 0
            assert 0 not in seen["groups"]
        if os.getuid() == 0:  # as root, the worker drops to the module's own uid
            assert seen_a["uid"] == module_uid("uid-a")
            assert seen_b["uid"] == module_uid("uid-b")
            assert seen_a["uid"] != seen_b["uid"]

    with_pool(sandbox, body)


@pytest.mark.usefixtures("bubblewrap")
def test_tmp_is_private(sandbox: Sandbox, tmp_path: Path) -> None:
    a, b = probe(sandbox, "tmp-a"), probe(sandbox, "tmp-b")
    marker = f"/tmp/marker-{uuid.uuid4().hex}"
    host_file = tmp_path / "host-only.txt"
    host_file.write_text("the host's /tmp")

    async def body(pool: WorkerPool) -> None:
        wrote = await ask(pool, a, "write", paths=[marker], text="from a")
        assert wrote == {marker: {"ok": True, "result": marker}}
        mine = await ask(pool, a, "read", paths=[marker])
        assert mine == {marker: {"ok": True, "result": "from a"}}
        theirs = await ask(pool, b, "read", paths=[marker, str(host_file)])
        assert isinstance(theirs, dict)
        assert failed(theirs[marker]) == "FileNotFoundError"
        assert failed(theirs[str(host_file)]) == "FileNotFoundError"

    with_pool(sandbox, body)
    assert not Path(marker).exists()


@pytest.mark.usefixtures("bubblewrap")
def test_tmp_cannot_eat_the_machines_memory(sandbox: Sandbox) -> None:
    bwrap = launch.bwrap_path()
    assert bwrap is not None
    if not launch._tmpfs_size_option(bwrap):
        pytest.skip("this bwrap has no --size (bubblewrap < 0.8): /tmp is not capped")
    runtime = probe(sandbox, unique("filler"), memory_mb=64)

    async def body(pool: WorkerPool) -> None:
        small = await ask(pool, runtime, "fill", path="/tmp/small", mb=8)
        assert small == {"ok": True, "result": 8}
        try:
            big = await ask(pool, runtime, "fill", path="/tmp/big", mb=128)
        except WorkerUnavailable:
            # With a control group, /tmp's pages count against the module's memory limit
            # too, so the worker is killed for memory before the tmpfs is full.
            assert pool.cgroups is not None
            return
        assert failed(big) == "OSError"
        assert isinstance(big, dict)
        assert "No space left" in big["message"]

    with_pool(sandbox, body)


@pytest.mark.usefixtures("bubblewrap")
def test_a_dependency_pth_file_runs_as_the_module_without_capabilities(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # A `.pth` file runs when the interpreter starts, before any code of the worker's
    # own: the interpreter must already be the module's uid, with nothing to escalate.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_pth_wheel(wheels, "mh-pth")
    name = unique("pth")
    env = sandbox.data_dir / "envs" / name / "1.0.0"
    create_env(
        env,
        ["mh-pth==1.0.0"],
        index=PackageIndex(find_links=(str(wheels),), offline=True),
        cache_dir=sandbox.data_dir / "cache" / "uv" / name,
        owner=name,
    )
    runtime = ModuleRuntime(name, "1.0.0", code=sandbox.code(name, source="probe"), env=env)

    async def body(pool: WorkerPool) -> None:
        seen = await ask(pool, runtime, "identity")
        assert isinstance(seen, dict)
        recorded = ast.literal_eval(seen["environ"]["MODHUB_TEST_PTH"])
        assert recorded["uid"] == (module_uid(name) if os.getuid() == 0 else os.getuid())
        assert recorded["status"]["CapEff"] == "0000000000000000"
        assert recorded["status"]["CapPrm"] == "0000000000000000"
        assert recorded["status"]["NoNewPrivs"] == "1"

    with_pool(sandbox, body)


# -- the rlimits fallback ------------------------------------------------------------------


def test_as_root_without_bubblewrap_no_module_code_starts(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.getuid() != 0:
        pytest.skip("only root can be refused: an unprivileged modhub gets the rlimits floor")
    monkeypatch.setenv("MODHUB_SANDBOX", "rlimits")  # as if bwrap were not installed
    assert isolation() == "refused"
    runtime = sandbox.runtime(unique("as-root"))

    async def body(pool: WorkerPool) -> None:
        with pytest.raises(WorkerUnavailable, match="bubblewrap") as raised:
            await answer_json(pool, runtime, f"{ATTACKS}:ok")
        assert raised.value.status == 503
        assert runtime.key not in pool.workers

    with_pool(sandbox, body)


@pytest.mark.skipif(
    os.getuid() == 0,
    reason="the rlimits floor is for an unprivileged modhub; as root, module code needs "
    "bubblewrap (test_as_root_without_bubblewrap_no_module_code_starts)",
)
def test_rlimits_fallback_runs_handlers_and_limits_memory(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODHUB_SANDBOX", "rlimits")
    monkeypatch.setenv("MODHUB_SECRET_KEY", KEY)
    assert isolation() == "rlimits"
    runtime = sandbox.runtime("fallback", memory_mb=256)
    seer = probe(sandbox, "fallback-probe")

    async def body(pool: WorkerPool) -> None:
        answer = await answer_json(pool, runtime, f"{ATTACKS}:ok")
        # No PID namespace: the worker is the very process the pool started.
        assert answer["pid"] == pool.workers[runtime.key].process.pid
        with pytest.raises((HandlerFailed, WorkerUnavailable)):
            await answer_json(pool, runtime, f"{ATTACKS}:memory_bomb")
        if runtime.key in pool.workers:
            assert "MemoryError" in "\n".join(pool.logs[runtime.name])
        again = await eventually(lambda: answer_json(pool, runtime, f"{ATTACKS}:ok"))
        assert again["ok"] is True
        seen = await ask(pool, seer, "identity")
        assert isinstance(seen, dict)
        assert not [name for name in seen["environ"] if name.startswith("MODHUB_")]
        assert set(seen["environ"]) <= ALLOWED_ENV
        # Its HOME and TMPDIR are a folder of its own under the data dir.
        assert seen["environ"]["TMPDIR"] == str(sandbox.data_dir / "tmp" / "fallback-probe")

    with_pool(sandbox, body)
