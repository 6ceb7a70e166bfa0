"""Typed models of `module.json`, the manifest a module ships.

The models check the shape of every field and the format of single values
(names, versions, ranges, paths, cron expressions). Rules that relate several
fields to each other live in `modhub.manifest.checks`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from modhub import semver
from modhub.manifest import formats

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
CONFIG_TYPES = ("string", "password", "number", "integer", "boolean", "select")
MAX_JOB_TIMEOUT_MS = 86_400_000
# Lengths of the values the registry stores in columns (`modhub.db.models`); the server and
# `modhub validate` both refuse longer ones here, so they always agree.
MAX_DISPLAY_NAME = 200
MAX_AUTHOR = 200
MAX_LICENSE = 100
MAX_VERSION = 256
MAX_RANGE = 256
MAX_PERMISSION = 128


def _error(code: str, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(code, message, ctx or None)


def _module_name(value: str) -> str:
    if not formats.MODULE_NAME.fullmatch(value):
        raise _error(
            "invalid_name",
            "'{value}' is not a valid module name: use 2-64 characters of lowercase "
            "letters, digits and single hyphens, starting with a letter",
            value=value,
        )
    return value


def _version(value: str) -> str:
    if not semver.valid_version(value):
        raise _error(
            "invalid_version",
            "'{value}' is not a SemVer 2.0.0 version (for example 1.0.0 or 2.1.0-beta.1)",
            value=value,
        )
    return value


def _range(value: str) -> str:
    if not semver.valid_range(value):
        raise _error(
            "invalid_range",
            "'{value}' is not a valid npm version range (for example ^1.0.0, ~1.2, 1.x, "
            ">=1.0.0 <2.0.0, 1.0.0 - 2.0.0)",
            value=value,
        )
    return value


def _requirement(value: str) -> str:
    problem = formats.requirement_syntax_problem(value)
    if problem:
        raise _error(
            "invalid_requirement",
            "'{value}' is not a PEP 508 requirement: {problem}",
            value=value,
            problem=problem,
        )
    return value


def _handler(value: str) -> str:
    problem = formats.file_ref_problem(value, allow_function=True)
    if problem:
        raise _error(
            "invalid_handler", "handler '{value}': {problem}", value=value, problem=problem
        )
    return value


def _component(value: str) -> str:
    problem = formats.file_ref_problem(value, allow_function=False)
    if problem:
        raise _error(
            "invalid_component", "component '{value}': {problem}", value=value, problem=problem
        )
    return value


def _route_path(value: str) -> str:
    problem = formats.route_path_problem(value)
    if problem:
        raise _error(
            "invalid_route_path", "route path '{value}': {problem}", value=value, problem=problem
        )
    return formats.normalise_route_path(value)


def _page_path(value: str) -> str:
    if not formats.PAGE_PATH.fullmatch(value):
        raise _error(
            "invalid_page_path",
            "page path '{value}' must be absolute, like /vmware or /vmware/vms",
            value=value,
        )
    return value


def _permission(value: str) -> str:
    if not formats.PERMISSION.fullmatch(value):
        raise _error(
            "invalid_permission",
            "'{value}' is not a permission of the form scope:action (for example vmware:read)",
            value=value,
        )
    return value


def _cron(value: str) -> str:
    problem = formats.cron_problem(value)
    if problem:
        raise _error("invalid_cron", "schedule '{value}': {problem}", value=value, problem=problem)
    return value


def _timezone(value: str) -> str:
    if not formats.valid_timezone(value):
        raise _error(
            "invalid_timezone",
            "'{value}' is not an IANA time zone (for example Europe/Paris or UTC)",
            value=value,
        )
    return value


def _schema(pattern: str, **extra: Any) -> dict[str, Any]:
    anchored = pattern if pattern.startswith("^") else f"^(?:{pattern})$"
    return {"pattern": anchored, **extra}


ModuleName = Annotated[
    str,
    AfterValidator(_module_name),
    Field(json_schema_extra=_schema(formats.MODULE_NAME.pattern, minLength=2, maxLength=64)),
]
# The length comes before the format: a value too long for its column is `too_long`.
Version = Annotated[
    str,
    Field(max_length=MAX_VERSION, json_schema_extra=_schema(formats.SEMVER_PATTERN)),
    AfterValidator(_version),
]
Range = Annotated[
    str,
    Field(
        max_length=MAX_RANGE,
        description="An npm version range: ^1.0.0, ~1.2, 1.x, >=1 <2, a - b, ||",
    ),
    AfterValidator(_range),
]
Requirement = Annotated[
    str,
    AfterValidator(_requirement),
    Field(description="A PEP 508 requirement, for example httpx>=0.27"),
]
HandlerRef = Annotated[
    str,
    AfterValidator(_handler),
    Field(
        description="A .py file inside the module, with an optional :function (default: handler)"
    ),
]
ComponentRef = Annotated[str, AfterValidator(_component)]
RoutePath = Annotated[str, AfterValidator(_route_path)]
PagePath = Annotated[
    str, AfterValidator(_page_path), Field(json_schema_extra=_schema(formats.PAGE_PATH.pattern))
]
Permission = Annotated[
    str,
    Field(max_length=MAX_PERMISSION, json_schema_extra=_schema(formats.PERMISSION.pattern)),
    AfterValidator(_permission),
]
CronExpr = Annotated[str, AfterValidator(_cron)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
ConfigKey = Annotated[str, Field(pattern=formats.CONFIG_KEY.pattern)]
Scalar = str | int | float | bool


class Model(BaseModel):
    """Base of every manifest object: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


class Route(Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    path: RoutePath
    handler: HandlerRef
    permissions: list[Permission] = []
    description: str | None = None


class Api(Model):
    routes: list[Route] = []


class Job(Model):
    name: Annotated[str, Field(pattern=formats.JOB_NAME.pattern)]
    handler: HandlerRef
    schedule: CronExpr | None = None
    timezone: TimeZone | None = None
    timeout: (
        Annotated[
            int,
            Field(gt=0, le=MAX_JOB_TIMEOUT_MS, description="Milliseconds before a run is stopped"),
        ]
        | None
    ) = None
    retries: Annotated[int, Field(ge=0, le=10)] = 0
    misfire: Literal["coalesce", "skip"] = "coalesce"
    description: str | None = None


class Jobs(Model):
    handlers: list[Job] = []


class Page(Model):
    path: PagePath
    component: ComponentRef
    title: str
    icon: str | None = None
    permissions: list[Permission] = []


class NavItem(Model):
    label: str
    path: PagePath
    icon: str | None = None
    order: int = 0


class Ui(Model):
    pages: list[Page] = []
    navigation: list[NavItem] = []


def _event_name(value: str) -> str:
    if not EVENT_NAME.fullmatch(value):
        raise _error(
            "invalid_event_name",
            "'{value}' is not an event name: use dotted lowercase words, like vm.created",
            value=value,
        )
    return value


def _event_ref(value: str) -> str:
    module, _, name = value.partition("/")
    if not (module == "modhub" or formats.MODULE_NAME.fullmatch(module)) or not (
        EVENT_NAME.fullmatch(name)
    ):
        raise _error(
            "invalid_event_ref",
            "'{value}' is not an event reference: use module/event, like vmware-vcenter/vm.created",
            value=value,
        )
    return value


# Events: dotted lowercase words (`vm.created`); a subscription names `module/event`.
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
MAX_EVENT_NAME = 128
EventName = Annotated[
    str,
    Field(max_length=MAX_EVENT_NAME, json_schema_extra=_schema(EVENT_NAME.pattern)),
    AfterValidator(_event_name),
]
EventRef = Annotated[
    str,
    Field(
        max_length=64 + 1 + MAX_EVENT_NAME, description="module/event, or modhub/<platform event>"
    ),
    AfterValidator(_event_ref),
]


class EmittedEvent(Model):
    name: EventName
    description: str | None = None
    schema_: dict[str, Any] = Field(
        default={}, alias="schema", description="JSON Schema of the payload"
    )


class Subscription(Model):
    event: EventRef
    handler: HandlerRef
    timeout: (
        Annotated[
            int,
            Field(gt=0, le=MAX_JOB_TIMEOUT_MS, description="Milliseconds before an attempt stops"),
        ]
        | None
    ) = None
    retries: Annotated[int, Field(ge=0, le=10)] = 3


class Events(Model):
    emits: list[EmittedEvent] = []
    subscribes: list[Subscription] = []


class Capabilities(Model):
    api: Api = Api()
    jobs: Jobs = Jobs()
    ui: Ui = Ui()
    events: Events = Events()


class Dependencies(Model):
    modules: dict[ModuleName, Range] = {}
    npm: dict[str, Range] = {}
    system: dict[str, Range] = {}
    python: list[Requirement] = []


class Validation(Model):
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    min_length: Annotated[int, Field(ge=0)] | None = None
    max_length: Annotated[int, Field(ge=0)] | None = None


class SelectOption(Model):
    value: Scalar
    label: str | None = None


class ConfigField(Model):
    type: Literal["string", "password", "number", "integer", "boolean", "select"]
    label: str | None = None
    description: str | None = None
    required: bool = False
    default: Any = None
    sensitive: bool = False
    options: list[Scalar | SelectOption] | None = None
    validation: Validation | None = None

    @property
    def secret(self) -> bool:
        """Return whether values of this field are stored encrypted and never shown."""
        return self.type == "password" or self.sensitive

    def option_values(self) -> list[Scalar]:
        """Return the allowed values of a select field."""
        return [o.value if isinstance(o, SelectOption) else o for o in self.options or []]


class Config(Model):
    schema_: dict[ConfigKey, ConfigField] = Field(default={}, alias="schema")
    defaults: dict[str, Any] = {}


class Runtime(Model):
    memory_mb: Annotated[int, Field(ge=32, le=65_536)] | None = None
    timeout_ms: Annotated[int, Field(gt=0, le=600_000)] | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=1_000)] | None = None
    storage_mb: Annotated[int, Field(ge=1, le=65_536)] | None = None
    network: bool = False


class Metadata(BaseModel):
    """Free-form descriptive data; unknown keys are kept and warned about."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    homepage: str | None = None
    repository: str | None = None
    documentation: str | None = None
    tags: list[str] = []
    category: str | None = None


class Manifest(Model):
    """A module's `module.json`."""

    schema_uri: str | None = Field(default=None, alias="$schema")
    name: ModuleName
    version: Version
    display_name: Annotated[str, Field(min_length=1, max_length=MAX_DISPLAY_NAME)]
    description: str | None = None
    author: Annotated[str, Field(max_length=MAX_AUTHOR)] | None = None
    license: Annotated[str, Field(max_length=MAX_LICENSE)] | None = None
    capabilities: Capabilities = Capabilities()
    dependencies: Dependencies = Dependencies()
    config: Config = Config()
    permissions: list[Permission] = []
    runtime: Runtime = Runtime()
    metadata: Metadata = Metadata()
