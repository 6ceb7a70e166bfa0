"""What the registry returns: the shapes the API serves, camelCase on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modhub.registry.status import Status


class Shape(BaseModel):
    """Base of every API shape: camelCase aliases, accepted by either name."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )


class Dependency(Shape):
    name: str
    range: str
    installed_version: str | None = Field(description="The dependency's active version")
    status: Status | None
    satisfied: bool = Field(description="Registered and its version is inside the range")


class Dependent(Shape):
    name: str
    range: str
    version: str
    status: Status


class VersionInfo(Shape):
    version: str
    registered_at: datetime
    active: bool


class ModuleSummary(Shape):
    name: str
    version: str
    display_name: str
    description: str | None
    author: str | None
    license: str | None
    status: Status
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class ModuleDetail(ModuleSummary):
    manifest: dict[str, Any]
    config: dict[str, Any] = Field(description="Current configuration, secrets as ********")
    dependencies: list[Dependency]
    dependents: list[Dependent]
    versions: list[VersionInfo]
    previous_version: str | None = Field(description="The version a rollback returns to")
    path: str | None


class ModulePage(Shape):
    items: list[ModuleSummary]
    total: int
    limit: int
    offset: int


class PlanStep(Shape):
    module: str
    from_: Status = Field(alias="from")
    to: Status | None = Field(description="null when the module is removed")


class Plan(Shape):
    dry_run: bool
    steps: list[PlanStep]


class StoredData(Shape):
    keys: int = Field(description="Live keys in the module's store")
    bytes: int = Field(description="Their size: UTF-8 key plus compact JSON value")
    kept: bool = Field(description="true with keepData: the data stays for a later install")


class RemovalPlan(Plan):
    data: StoredData = Field(description="The module's store, deleted with it unless kept")


class StorageUsage(Shape):
    keys: int = Field(description="Live keys in the module's store")
    bytes: int = Field(description="Their size: UTF-8 key plus compact JSON value")
    limit_bytes: int = Field(
        description="runtime.storageMb (default 64) capped by MODHUB_MAX_MODULE_STORAGE_MB"
    )


class ModuleView(ModuleDetail):
    storage: StorageUsage = Field(description="What the module keeps in its store")


class ConfigNote(Shape):
    key: str
    change: str = Field(description="added, removed, sealed or stays-sealed")
    message: str


class UpgradePlan(Shape):
    dry_run: bool
    module: str
    from_: str = Field(alias="from", description="The active version")
    to: str = Field(description="The version the upgrade switches to")
    config: list[ConfigNote] = Field(description="What happens to the stored config")


class ConfigView(Shape):
    config: dict[str, Any]
