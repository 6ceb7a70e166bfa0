"""Read the seed specification (`seed.md`, a verbatim copy): its curl examples and manifests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = Path(__file__).parent / "seed.md"
SEED_HOST = "https://literate-space-funicular-76q945w7qjcx5xp-4000.app.github.dev"
SEED_TOKEN = "YOUR_ACCESS_TOKEN"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#### (Test \d+: .+)$", re.MULTILINE)


@dataclass(frozen=True)
class CurlExample:
    """One ```bash block of the seed that runs curl, with the heading above it."""

    title: str
    command: str

    def for_server(self, url: str, token: str) -> str:
        """Return the command aimed at `url` with `token`, and nothing else changed."""
        return self.command.replace(SEED_HOST, url).replace(SEED_TOKEN, token)

    def request_body(self) -> Any:
        """Return the JSON the command sends with -d, or None."""
        match = re.search(r"-d '(.*)'\s*$", self.command, re.DOTALL)
        return json.loads(match.group(1)) if match else None


def seed_text() -> str:
    """Return the seed specification."""
    return SEED.read_text("utf-8")


def curl_examples() -> list[CurlExample]:
    """Return every ```bash block that contains curl, in order, titled by its heading."""
    text = seed_text()
    examples = []
    for match in FENCE.finditer(text):
        language, body = match.groups()
        if language != "bash" or "curl" not in body:
            continue
        headings = HEADING.findall(text, 0, match.start())
        examples.append(CurlExample(headings[-1] if headings else "", body.rstrip()))
    return examples


def json_blocks() -> list[Any]:
    """Return the parsed ```json blocks of the seed."""
    return [json.loads(body) for lang, body in FENCE.findall(seed_text()) if lang == "json"]


def vmware_manifest() -> dict[str, Any]:
    """Return the seed's complete example manifest, `vmware-vcenter`."""
    (found,) = [b for b in json_blocks() if b.get("name") == "vmware-vcenter"]
    manifest: dict[str, Any] = found
    return manifest


def example_manifest(test: int) -> dict[str, Any]:
    """Return the manifest that the seed's curl example `Test {test}` sends."""
    (example,) = [e for e in curl_examples() if e.title.startswith(f"Test {test}:")]
    manifest: dict[str, Any] = example.request_body()["manifest"]
    return manifest
