"""The route table: compiling, matching, precedence, and atomic swaps."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modhub.errors import ModhubError, NotFound
from modhub.routes import (
    CompiledRoute,
    MethodNotAllowed,
    ModuleRoutes,
    RouteTable,
    RouteTableHolder,
    build_module_routes,
)
from modhub.routes.table import split_path
from tests.routes.conftest import api, compiled, make_runtime, manifest, route

VMS = manifest(
    "vmware",
    capabilities=api(
        route("GET", "/vms", "handlers/list.py"),
        route("POST", "/vms", "handlers/create.py", permissions=["vmware:write"]),
        route("GET", "/vms/:id", "handlers/get.py:get_vm", description="One VM"),
        route("DELETE", "/vms/{id}", "handlers/delete.py"),
        route("GET", "/vms/active", "handlers/active.py"),
        route("GET", "/vms/{id}/disks/{disk}", "handlers/disk.py"),
        route("PUT", "/{kind}/power", "handlers/power.py"),
        route("GET", "/", "handlers/root.py"),
    ),
)


@pytest.fixture
def table(tmp_path: Path) -> RouteTable:
    return RouteTable([compiled(tmp_path, VMS)])


def matched(table: RouteTable, method: str, path: str) -> tuple[str, dict[str, str]]:
    found, params = table.match("vmware", method, path)
    return found.handler, params


def test_compile_splits_literals_and_parameters() -> None:
    compiled_route = CompiledRoute.compile("m", "get", "/vms/{id}/disks/{disk}", "h.py")
    assert compiled_route.method == "GET"
    assert compiled_route.segments == ("vms", None, "disks", None)
    assert compiled_route.params == ("id", "disk")
    assert CompiledRoute.compile("m", "GET", "/", "h.py").segments == ()


def test_match_returns_route_and_path_parameters(table: RouteTable) -> None:
    assert matched(table, "GET", "/vms") == ("handlers/list.py", {})
    assert matched(table, "POST", "/vms") == ("handlers/create.py", {})
    assert matched(table, "GET", "/vms/42") == ("handlers/get.py:get_vm", {"id": "42"})
    assert matched(table, "DELETE", "/vms/42") == ("handlers/delete.py", {"id": "42"})
    assert matched(table, "GET", "/vms/7/disks/sda") == (
        "handlers/disk.py",
        {"id": "7", "disk": "sda"},
    )
    assert matched(table, "GET", "/") == ("handlers/root.py", {})
    assert matched(table, "get", "/vms") == ("handlers/list.py", {})


def test_colon_parameters_are_normalised(table: RouteTable) -> None:
    found, _ = table.match("vmware", "GET", "/vms/1")
    assert found.path == "/vms/{id}"
    assert found.description == "One VM"


def test_literal_segments_win_over_parameters(table: RouteTable) -> None:
    assert matched(table, "GET", "/vms/active") == ("handlers/active.py", {})
    assert matched(table, "GET", "/vms/actives") == ("handlers/get.py:get_vm", {"id": "actives"})


def test_parameter_route_serves_a_method_the_literal_route_lacks(table: RouteTable) -> None:
    # DELETE /vms/active: the literal route has GET only; /vms/{id} has DELETE.
    assert matched(table, "DELETE", "/vms/active") == ("handlers/delete.py", {"id": "active"})


def test_literal_then_backtrack_to_parameter(table: RouteTable) -> None:
    # "vms" is a literal at the first segment, but /vms/power exists only as /{kind}/power.
    assert matched(table, "PUT", "/vms/power") == ("handlers/power.py", {"kind": "vms"})


def test_unknown_module_is_404(table: RouteTable) -> None:
    with pytest.raises(NotFound, match="no enabled module named 'nope'") as caught:
        table.match("nope", "GET", "/vms")
    assert caught.value.status == 404


@pytest.mark.parametrize("path", ["/nothing", "/vms/1/disks", "/vms/1/disks/a/b", "//", "/vms//"])
def test_unknown_path_is_404(table: RouteTable, path: str) -> None:
    with pytest.raises(NotFound, match="has no route"):
        table.match("vmware", "GET", path)


def test_other_method_is_405_listing_the_allowed_ones(table: RouteTable) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("vmware", "PATCH", "/vms")
    assert caught.value.status == 405
    assert caught.value.allowed == ["GET", "HEAD", "POST"]
    assert isinstance(caught.value, ModhubError)
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("vmware", "POST", "/vms/1")
    assert caught.value.allowed == ["DELETE", "GET", "HEAD"]


def test_head_falls_back_to_get(table: RouteTable) -> None:
    assert matched(table, "HEAD", "/vms/9") == ("handlers/get.py:get_vm", {"id": "9"})


def test_one_trailing_slash_is_ignored(table: RouteTable) -> None:
    assert matched(table, "GET", "/vms/") == ("handlers/list.py", {})
    assert matched(table, "GET", "") == ("handlers/root.py", {})


def test_segments_may_be_given_decoded(table: RouteTable) -> None:
    found, params = table.match("vmware", "GET", ["vms", "a/b"])
    assert (found.handler, params) == ("handlers/get.py:get_vm", {"id": "a/b"})
    assert split_path("/a/b") == ["a", "b"]
    assert split_path("/") == []


def test_python_handlers_with_code_are_runnable(tmp_path: Path) -> None:
    routes = compiled(tmp_path, VMS)
    assert all(r.handler_runnable for r in routes.routes)
    assert routes.runtime is not None
    assert routes.version == "1.0.0"
    assert routes.title == "Vmware module"


def test_typescript_handler_is_runnable_in_the_node_worker(tmp_path: Path) -> None:
    m = manifest("seed", capabilities=api(route("GET", "/hello", "handlers/hello.ts")))
    routes = build_module_routes(m, make_runtime(tmp_path, m))
    (hello,) = routes.routes
    assert hello.handler_runnable


def test_a_commonjs_handler_is_not_runnable(tmp_path: Path) -> None:
    m = manifest("seed", capabilities=api(route("GET", "/hello", "handlers/hello.cjs")))
    routes = build_module_routes(m, make_runtime(tmp_path, m))
    (hello,) = routes.routes
    assert not hello.handler_runnable
    assert hello.missing is not None
    assert "handlers/hello.cjs" in hello.missing
    assert "not a Python, TypeScript or JS file" in hello.missing


def test_module_without_code_is_not_runnable(tmp_path: Path) -> None:
    routes = compiled(tmp_path, VMS, code=False)
    assert routes.runtime is None
    assert not any(r.handler_runnable for r in routes.routes)
    assert all(
        "no code" in (r.missing or "") and r.handler in (r.missing or "") for r in routes.routes
    )


def test_missing_handler_file_is_not_runnable(tmp_path: Path) -> None:
    m = manifest("vmware", capabilities=api(route("GET", "/a", "handlers/a.py")))
    routes = build_module_routes(m, make_runtime(tmp_path, m, files=()))
    assert (
        routes.routes[0].missing == "handler file 'handlers/a.py' of module 'vmware' does not exist"
    )


def test_runtime_of_another_module_is_refused(tmp_path: Path) -> None:
    other = manifest("other")
    with pytest.raises(ValueError, match="does not belong"):
        build_module_routes(VMS, make_runtime(tmp_path, other))


def test_with_and_without_module_return_new_tables(tmp_path: Path) -> None:
    empty = RouteTable()
    one = empty.with_module(compiled(tmp_path, VMS))
    assert len(empty) == 0
    assert list(one) == ["vmware"]
    two = one.with_module(compiled(tmp_path, manifest("other")))
    assert sorted(two) == ["other", "vmware"]
    assert list(one) == ["vmware"]
    assert list(two.without_module("vmware")) == ["other"]
    assert two.without_module("absent") is two
    with pytest.raises(TypeError):
        two._modules["x"] = two["vmware"]  # type: ignore[index]


def test_with_module_replaces_the_version(tmp_path: Path) -> None:
    v1 = RouteTable([compiled(tmp_path, VMS)])
    v2 = v1.with_module(compiled(tmp_path, manifest("vmware", "2.0.0")))
    assert v1["vmware"].version == "1.0.0"
    assert v2["vmware"].version == "2.0.0"


def test_a_reader_keeps_the_table_it_took(tmp_path: Path) -> None:
    holder = RouteTableHolder(RouteTable([compiled(tmp_path, VMS)]))
    seen = holder.table
    previous = holder.swap(seen.without_module("vmware"))
    assert previous is seen
    # The reader's view is unchanged and still consistent...
    assert seen.match("vmware", "GET", "/vms")[0].handler == "handlers/list.py"
    # ...while new readers see the new table.
    with pytest.raises(NotFound):
        holder.table.match("vmware", "GET", "/vms")


def test_update_never_loses_a_concurrent_change(tmp_path: Path) -> None:
    holder = RouteTableHolder()
    modules: list[ModuleRoutes] = [
        compiled(tmp_path, manifest(f"mod-{i}"), code=False) for i in range(200)
    ]
    barrier = threading.Barrier(8)

    def add(chunk: list[ModuleRoutes]) -> None:
        barrier.wait()
        for m in chunk:
            holder.update(lambda table, m=m: table.with_module(m))  # type: ignore[misc]

    threads = [threading.Thread(target=add, args=(modules[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(holder.table) == 200


def test_readers_under_churn_always_see_whole_modules(tmp_path: Path) -> None:
    v1 = compiled(tmp_path, VMS)
    v2 = build_module_routes(
        manifest("vmware", "2.0.0", capabilities=api(route("GET", "/vms", "handlers/v2.py"))),
        None,
    )
    holder = RouteTableHolder(RouteTable([v1]))
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            table = holder.table
            module = table.get("vmware")
            if module is None:
                continue
            found, _ = table.match("vmware", "GET", "/vms")
            if found not in module.routes:
                problems.append(f"{module.version}: {found.handler}")

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    for i in range(2000):
        holder.update(lambda t, i=i: t.with_module(v1 if i % 3 else v2))  # type: ignore[misc]
        if i % 7 == 0:
            holder.update(lambda t: t.without_module("vmware"))
    stop.set()
    for reader in readers:
        reader.join()
    assert problems == []
