"""Commands that work on the database directly: serve, db, users, tokens, roles."""

from __future__ import annotations

import math
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from modhub.cli.app import app, err, load_settings, out
from modhub.errors import ModhubError

if TYPE_CHECKING:
    from modhub.services import Services
    from modhub.settings import Settings

# The services (SQLAlchemy, FastAPI, the event dispatcher, the registry...) are imported
# by the commands that open them, not by every `modhub` command (tests/cli/test_imports.py).

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where modhub keeps its data [env: MODHUB_DATA_DIR; default ./.modhub]"
    ),
]
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
users_app = typer.Typer(help="Users (on the database directly).", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for scripts.", no_args_is_help=True)
roles_app = typer.Typer(help="Roles and their permissions.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(roles_app, name="roles")


def settings_for(data_dir: Path | None, **overrides: object) -> Settings:
    """Return the settings from the environment, with command-line overrides (an invalid
    setting ends the command with a line naming it, exit 2)."""
    return load_settings(data_dir=data_dir, **overrides)


def start(data_dir: Path | None) -> Services:
    """Open the services, or exit with the reason they cannot start."""
    from modhub.services import Services

    try:
        return Services.start(settings_for(data_dir))
    except ModhubError as exc:
        err.print(f"[red]error:[/] {escape(exc.detail)}")
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default 4000]")] = None,
    data_dir: DataDir = None,
    examples: Annotated[
        Path | None,
        typer.Option(help="On first start, install every module folder in this directory"),
    ] = None,
    prefetch: Annotated[
        bool,
        typer.Option(
            "--prefetch",
            help="Materialize every enabled module at start-up and after each change "
            "[default MODHUB_PREFETCH]",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Server processes sharing the port and the data dir, each a node of the cluster",
        ),
    ] = 1,
) -> None:
    """Serve the API (and, on first start, create the admin account)."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from modhub.api.app import create_app
    from modhub.api.protocol import server_options
    from modhub.metrics import listener as metrics_listener
    from modhub.services import Services
    from modhub.telemetry import logs

    try:
        settings = settings_for(data_dir, host=host, port=port, prefetch=prefetch or None)
        services = Services.start(settings)
    except ModhubError as exc:
        err.print(f"[red]error:[/] {escape(exc.detail)}")
        raise typer.Exit(2) from None
    first_start = not _has_users(services)
    generated = services.auth.ensure_admin(settings.admin_password)
    if first_start and (generated or settings.admin_password):
        if generated:
            out.print(
                f"Created user [bold]admin[/] with password [bold]{generated}[/] "
                "(shown once; change it or set MODHUB_ADMIN_PASSWORD before first start)."
            )
        else:
            out.print("Created user [bold]admin[/] with the password in MODHUB_ADMIN_PASSWORD.")
        out.print(
            f"Log in: curl -X POST http://{settings.host}:{settings.port}/api/v1/auth/login "
            "-H 'Content-Type: application/json' "
            '-d \'{"username":"admin","password":"..."}\''
        )
    if examples is not None and services.registry.list_modules(limit=1).total == 0:
        install_examples(services, examples)
    out.print(
        f"modhub serving on http://{settings.host}:{settings.port} "
        f"(data in {settings.data_dir}, database {services.db.dialect})"
    )
    logs.configure(settings.log_format)
    if workers > 1:
        services.close()  # each worker process starts its own, as a node of the cluster
        serve_workers(settings, workers)
        return
    metrics_listener.listen(settings, services.db)  # MODHUB_METRICS_ADDRESS, when set
    uvicorn.run(
        create_app(services=services, freeze_startup=True),
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=logs.uvicorn_config(settings.log_format, LOGGING_CONFIG),
        access_log=False,
        # SIGTERM: the listening socket closes at once; requests in flight get this long.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        # The C parser (a quarter of /healthz's cost less than h11), refusing request
        # heads over 64 KiB with 431.
        **server_options("httptools"),
    )


def serve_workers(settings: Settings, workers: int) -> None:
    """Run `workers` uvicorn processes on one port, each on a socket of its own
    (api/supervisor.py), each building its own services from the environment (the command
    line's settings passed down through it)."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from modhub.api.protocol import server_options
    from modhub.api.supervisor import Spread, listening_sockets
    from modhub.metrics import listener as metrics_listener
    from modhub.telemetry import logs

    metrics_listener.prepare_workers(settings)  # before the processes import prometheus
    metrics_listener.listen(settings)  # one listener, adding up every process's metrics
    os.environ.update(
        MODHUB_DATA_DIR=str(settings.data_dir.resolve()),
        MODHUB_HOST=settings.host,
        MODHUB_PORT=str(settings.port),
        MODHUB_PREFETCH="true" if settings.prefetch else "false",
    )
    config = uvicorn.Config(
        "modhub.api.app:served_app",
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level="info",
        # uvicorn configures logging in each worker process: modhub's loggers too, at INFO.
        log_config=logs.uvicorn_config(settings.log_format, LOGGING_CONFIG),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        # A process starting on a busy machine (imports, migrations checked, recovery) may
        # take longer than uvicorn's 5 s to answer its supervisor: not a hang.
        timeout_worker_healthcheck=30,
        access_log=False,
        **server_options("httptools"),
    )
    # Each process on a socket of its own (SO_REUSEPORT): the kernel spreads connections.
    sockets = listening_sockets(settings.host, settings.port, workers, config.backlog)
    try:
        Spread(config, sockets).run()
    except KeyboardInterrupt:  # as uvicorn.run: the supervisor's own signal handling ends it
        pass
    finally:
        for sock in sockets:
            sock.close()


def install_examples(services: Services, folder: Path) -> None:
    """Install every module folder under `folder`; enable those that need no config."""
    from modhub.registry import Status

    names = []
    for module in sorted(p for p in folder.iterdir() if (p / "module.json").is_file()):
        try:
            names.append(services.lifecycle.add_bundle(module, actor="system").name)
        except ModhubError as exc:
            err.print(
                f"[yellow]example {escape(module.name)} not installed:[/] {escape(exc.detail)}"
            )
    for name in names:
        for status in (Status.ENABLED, Status.DISABLED):
            try:
                services.lifecycle.set_status(name, status, actor="system", cascade=True)
            except ModhubError as exc:
                reason = exc.detail
                continue
            out.print(f"example {name}: {status}")
            break
        else:
            out.print(f"example {name}: registered ({reason})")


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Migrate the database (MODHUB_DATABASE_URL, or the embedded SQLite) to the newest schema."""
    from modhub.db import Database
    from modhub.db.migrate import upgrade

    settings = settings_for(data_dir)
    settings.prepare_data_dir()
    db = Database(settings.db_url)
    try:
        upgrade(db.engine)
    finally:
        db.dispose()
    out.print(f"database at the newest schema ({db.dialect})")


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name")],
    role: Annotated[str, typer.Option(help="admin, operator, viewer, or a role of yours")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a user; asks for the password unless --password-stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    services = start(data_dir)
    try:
        services.auth.create_user(name, role, password)
    except ModhubError as exc:
        _fail(exc)
    finally:
        services.close()
    out.print(f"created user {name} ({role})")


@tokens_app.command("create")
def tokens_create(
    user: Annotated[str, typer.Option(help="The user the token acts as")],
    name: Annotated[str, typer.Option(help="A label to recognise the token by")] = "cli",
    data_dir: DataDir = None,
) -> None:
    """Print a new API token for `Authorization: Bearer` (shown once)."""
    services = start(data_dir)
    try:
        token = services.auth.create_api_token(user, name)
    except ModhubError as exc:
        _fail(exc)
    finally:
        services.close()
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option(help="Only this user's tokens")] = None,
    data_dir: DataDir = None,
) -> None:
    """List API tokens, revoked ones too (never the tokens themselves)."""
    services = start(data_dir)
    try:
        found = services.auth.api_tokens(user)
    except ModhubError as exc:
        _fail(exc)
    finally:
        services.close()
    table = Table("id", "user", "name", "prefix", "created", "last used", "revoked")
    for token in found:
        table.add_row(
            str(token.id),
            escape(token.user),
            escape(token.name),
            escape(token.prefix) + "…",
            _when(token.created_at),
            _when(token.last_used_at) if token.last_used_at else "never",
            "yes" if token.revoked else "no",
        )
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id (tokens list)")],
    data_dir: DataDir = None,
) -> None:
    """Revoke an API token: it is refused from its next request on."""
    services = start(data_dir)
    try:
        token = services.auth.revoke_api_token(token_id)
    except ModhubError as exc:
        _fail(exc)
    finally:
        services.close()
    out.print(f"revoked API token {token.id} ({escape(token.user)}, {escape(token.name)})")


@roles_app.command("list")
def roles_list(data_dir: DataDir = None) -> None:
    """List roles and their permissions."""
    services = start(data_dir)
    try:
        table = Table("role", "permissions")
        for role, permissions in services.auth.roles().items():
            table.add_row(role, ", ".join(permissions))
        out.print(table)
    finally:
        services.close()


@roles_app.command("grant")
def roles_grant(role: str, permission: str, data_dir: DataDir = None) -> None:
    """Grant a permission (for example vmware:read) to a role."""
    services = start(data_dir)
    try:
        services.auth.grant(role, permission)
    except ModhubError as exc:
        _fail(exc)
    finally:
        services.close()
    out.print(f"granted {permission} to {role}")


@roles_app.command("revoke")
def roles_revoke(role: str, permission: str, data_dir: DataDir = None) -> None:
    """Take a permission away from a role."""
    services = start(data_dir)
    try:
        services.auth.revoke(role, permission)
    except ModhubError as exc:
        _fail(exc)
    finally:
        services.close()
    out.print(f"revoked {permission} from {role}")


def _has_users(services: Services) -> bool:
    from sqlalchemy import select

    from modhub.db.models import User

    with services.db.read() as session:
        return session.scalars(select(User.id).limit(1)).first() is not None


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _fail(exc: ModhubError) -> NoReturn:
    err.print(f"[red]error:[/] {escape(exc.detail)}")
    for item in exc.errors or []:
        err.print(escape(f"  {item.get('path', '')}: {item.get('message', '')}"))
    raise typer.Exit(1)
