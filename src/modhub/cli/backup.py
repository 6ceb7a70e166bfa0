"""`modhub backup FILE` and `modhub restore FILE`: on the database and data dir directly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from modhub.cli.app import app, err, load_settings, out
from modhub.errors import ModhubError

if TYPE_CHECKING:
    from modhub.backup import Manifest

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where modhub keeps its data [env: MODHUB_DATA_DIR; default ./.modhub]"
    ),
]


def _fail(exc: ModhubError) -> None:
    err.print(f"[red]error:[/] {escape(exc.detail)}", soft_wrap=True)
    raise typer.Exit(1)


def _summary(manifest: Manifest) -> str:
    revision = manifest.alembic_revision or "none"
    code = f", code of {len(manifest.code)} older version(s) as files" if manifest.code else ""
    return f"{manifest.database} database at schema revision {revision}{code}"


@app.command()
def backup(
    file: Annotated[Path, typer.Argument(help="The backup file to write (replaced if it exists)")],
    include_key: Annotated[
        bool,
        typer.Option(
            "--include-key", help="Put the secret key in the backup (keep the file safe then)"
        ),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Write a consistent backup of the database, the stored bundles and the key's check
    value to FILE (mode 0600) while the servers run."""
    from modhub.backup import BackupError, take_backup  # not paid by every other command

    settings = load_settings(data_dir=data_dir)
    try:
        manifest = take_backup(settings, file, include_key=include_key)
    except ModhubError as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail(BackupError(f"{file}: {exc.strerror or exc}"))
        return
    out.print(f"backup written to {escape(str(file.absolute()))}: {_summary(manifest)}")
    for item in manifest.code_missing:
        err.print(
            f"[yellow]warning:[/] the code of {escape(item)} is neither in the database nor in"
            " this data dir: back up on the node that installed it (its start stores it)"
        )
    if include_key:
        out.print("the secret key is in this file: keep it as safe as the key itself")
    else:
        out.print(
            "the secret key is not in this file: keep MODHUB_SECRET_KEY (or the data dir's "
            "secret.key) safe apart; restore needs it"
        )


@app.command()
def restore(
    file: Annotated[Path, typer.Argument(help="A file written by `modhub backup`")],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="A file holding the backed-up installation's secret key (e.g. its secret.key)",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Restore a backup into an empty data dir (and an empty MODHUB_DATABASE_URL database),
    then migrate it to this version's schema."""
    from modhub.backup import BackupError, restore_backup  # not paid by every other command

    settings = load_settings(data_dir=data_dir)
    try:
        manifest = restore_backup(settings, file, key_file=key_file)
    except ModhubError as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail(BackupError(f"restore failed, nothing kept: {exc}"))
        return
    out.print(
        f"restored {escape(str(file))} (made {manifest.created_at} by modhub "
        f"{escape(manifest.modhub_version)}) into {escape(str(settings.data_dir))}: "
        f"{_summary(manifest)}, migrated to this version's schema"
    )
    out.print("module environments are built again on first use (or at start with --prefetch)")
