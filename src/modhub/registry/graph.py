"""The module dependency graph: order of enabling, and cycles named in full."""

from __future__ import annotations

from collections.abc import Mapping


def find_cycle(edges: Mapping[str, list[str]], start: str) -> list[str] | None:
    """Return a cycle through `start` as [start, ..., start], or None."""
    path: list[str] = [start]
    on_path = {start}
    done: set[str] = set()

    def walk(node: str) -> list[str] | None:
        for nxt in sorted(edges.get(node, [])):
            if nxt == start:
                return [*path, start]
            if nxt in on_path or nxt in done:
                continue
            path.append(nxt)
            on_path.add(nxt)
            found = walk(nxt)
            if found:
                return found
            on_path.discard(path.pop())
            done.add(nxt)
        return None

    return walk(start)
