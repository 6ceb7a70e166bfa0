"""Measure manifest validations per second: `validate_manifest` against JSON Schema alone.

Run with `make bench` (or `.venv/bin/python bench/validate.py [--seconds S]`). The
document is the specification's example manifest, `vmware-vcenter`. Rows:

- full, same document: `validate_manifest` on one dict, again and again. Every
  per-value cache (npm ranges, cron expressions, PEP 508 requirements, time zones)
  hits after the first call.
- full, new version + route path: each call sees a new `version` and a new route
  `path`. Neither value is cached, so this row should be close to the first one.
- full, every cached value new: each call also sees new dependency ranges and a
  new cron schedule, so every per-value cache misses. This is the cost of a
  manifest the process has never seen.
- JSON Schema only: `jsonschema_rs` with `manifest_schema()`, compiled once,
  collecting every error (as the full validation does).

The changing rows rewrite the values in place before each call; that takes about a
microsecond, and it is counted in their time.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jsonschema_rs

from common import VMWARE_FIXTURE, library_versions, machine_summary, utc_now
from modhub.manifest import manifest_schema, validate_manifest

TARGET = 5_000
BATCH = 50
ROUNDS = 5


class Round(NamedTuple):
    rate: float  # calls per second of wall-clock time (perf_counter)
    cpu: float  # share of that time this process was on a CPU; well below 1 = a busy machine


def measure(step: Callable[[int], object], seconds: float) -> list[Round]:
    """Time `step(i)` in `ROUNDS` rounds that together take about `seconds`, after a warm-up."""
    i = 0
    warm_until = time.perf_counter() + min(0.5, seconds / 4)
    while time.perf_counter() < warm_until:
        for _ in range(BATCH):
            step(i)
            i += 1
    rounds = []
    for _ in range(ROUNDS):
        calls = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        while True:
            for _ in range(BATCH):
                step(i)
                i += 1
            calls += BATCH
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / ROUNDS:
                cpu = (time.process_time() - cpu_start) / elapsed
                rounds.append(Round(calls / elapsed, cpu))
                break
    return rounds


def new_version_and_path(doc: dict[str, Any]) -> Callable[[int], object]:
    """Return a step that validates `doc` with a version and route path never seen before."""
    route = doc["capabilities"]["api"]["routes"][0]

    def step(i: int) -> object:
        doc["version"] = f"1.0.{i}"
        route["path"] = f"/vms{i}"
        return validate_manifest(doc)

    return step


def every_value_new(doc: dict[str, Any]) -> Callable[[int], object]:
    """Return a step that also changes every value a per-value cache keeps."""
    route = doc["capabilities"]["api"]["routes"][0]
    job = doc["capabilities"]["jobs"]["handlers"][0]
    deps = doc["dependencies"]

    def step(i: int) -> object:
        doc["version"] = f"1.0.{i}"
        route["path"] = f"/vms{i}"
        deps["modules"]["core-auth"] = f"^1.{i}.0"
        deps["npm"]["vmware-rest-api"] = f"^2.{i}.0"
        deps["system"]["node"] = f">=20.{i}.0"
        # 40,320 distinct schedules: far more than the cron cache holds.
        job["schedule"] = f"{i % 60} {i // 60 % 24} {i // 1440 % 28 + 1} * *"
        return validate_manifest(doc)

    return step


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row (default 2)")
    seconds = parser.parse_args().seconds

    text = VMWARE_FIXTURE.read_text("utf-8")
    doc = json.loads(text)
    result = validate_manifest(doc)
    assert result.valid, result.errors
    validator = jsonschema_rs.validator_for(manifest_schema())
    assert validator.is_valid(doc)

    rows = {
        "full, same document": measure(lambda _: validate_manifest(doc), seconds),
        "full, new version + route path": measure(new_version_and_path(json.loads(text)), seconds),
        "full, every cached value new": measure(every_value_new(json.loads(text)), seconds),
        "JSON Schema only (jsonschema-rs)": measure(
            lambda _: list(validator.iter_errors(doc)), seconds
        ),
    }
    schema = max(rows["JSON Schema only (jsonschema-rs)"])

    print(f"modhub manifest validation: {VMWARE_FIXTURE.name} ({len(text):,} bytes)")
    print(f"date:    {utc_now()}")
    print(f"machine: {machine_summary()}")
    print(f"libs:    {library_versions('pydantic', 'jsonschema-rs')}")
    print(f"each row: {ROUNDS} rounds over {seconds:g} s after a warm-up")
    print()
    print(
        f"{'check':<33} {'best /s':>10} {'worst /s':>10} {'µs each':>8} {'× schema':>9} "
        f"{'cpu':>5} {'/cpu-s':>9}  target {TARGET:,}/s"
    )
    for label, rounds in rows.items():
        best = max(rounds)
        verdict = "" if best is schema else ("met" if best.rate >= TARGET else "MISSED")
        print(
            f"{label:<33} {best.rate:>10,.0f} {min(rounds).rate:>10,.0f} "
            f"{1e6 / best.rate:>8.1f} {schema.rate / best.rate:>8.1f}× {best.cpu:>5.0%} "
            f"{best.rate / best.cpu:>9,.0f}  {verdict}"
        )
    print()
    print("best, worst: calls per second of wall-clock time in the best and worst round")
    print("cpu: share of the best round this process was running (low = a busy machine)")
    print("/cpu-s: calls per CPU-second in the best round, steadier when the machine is busy")


if __name__ == "__main__":
    main()
