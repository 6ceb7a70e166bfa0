"""Every link between the docs and the README points to a file that exists and, with an
anchor, to a heading that page has (the docs were split into several pages)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slugs(page: Path) -> set[str]:
    """Return the anchors of `page`'s headings, as GitHub makes them."""
    headings = [line for line in page.read_text().splitlines() if line.startswith("#")]
    return {
        re.sub(r"[^a-z0-9 _-]", "", h.lstrip("#").strip().lower()).replace(" ", "-")
        for h in headings
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_point_to_files_and_headings_that_exist(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in slugs(linked):
            broken.append(target)
    assert broken == [], f"{page.name}: broken links {broken}"
