"""`modhub module new` and `modhub sdk types`: start a module, and give editors the types."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from modhub.cli.app import app, err, out
from modhub.cli.client import module_app

sdk_app = typer.Typer(help="The handler contract for module authors.", no_args_is_help=True)
app.add_typer(sdk_app, name="sdk")
TYPES = Path(__file__).resolve().parent.parent / "sdk" / "modhub.d.ts"
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@sdk_app.command("types")
def types() -> None:
    """Print the TypeScript definitions of the handler contract (> modhub.d.ts)."""
    typer.echo(TYPES.read_text("utf-8"), nl=False)


@module_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="The module's name (lower-case, dashes).")],
    lang: Annotated[
        str, typer.Option("--lang", help="python or typescript", case_sensitive=False)
    ] = "python",
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to write it (default: ./NAME).")
    ] = None,
) -> None:
    """Write a module folder that validates, installs and answers its route at once."""
    lang = lang.lower()
    if lang not in ("python", "typescript"):
        err.print(f"[red]error:[/] --lang: '{escape(lang)}' is not python or typescript")
        raise typer.Exit(2)
    if not NAME.fullmatch(name) or len(name) > 64:
        err.print(
            f"[red]error:[/] NAME: '{escape(name)}' is not a module name (lower-case letters "
            "and digits, words joined by '-', starting with a letter, at most 64 characters)"
        )
        raise typer.Exit(2)
    folder = directory if directory is not None else Path(name)
    if folder.exists() and any(folder.iterdir()):
        err.print(f"[red]error:[/] --dir: {escape(str(folder))} exists and is not empty")
        raise typer.Exit(2)
    files = module_files(name, lang)
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    out.print(f"wrote {escape(str(folder))}: {', '.join(sorted(files))}")


def module_files(name: str, lang: str) -> dict[str, str]:
    """Return the files of a new module: relative path → text."""
    from modhub.manifest.schema import render_schema

    typescript = lang == "typescript"
    handler = "handlers/hello.ts" if typescript else "handlers/hello.py"
    job = "jobs/tick.ts" if typescript else "jobs/tick.py"
    title = " ".join(word.capitalize() for word in name.split("-"))
    manifest: dict[str, Any] = {
        "$schema": "./module.schema.json",
        "name": name,
        "version": "0.1.0",
        "displayName": title,
        "description": f"{title}: a new module",
        "capabilities": {
            "api": {
                "routes": [
                    {
                        "method": "GET",
                        "path": "/hello",
                        "handler": handler,
                        "permissions": [f"{name}:read"],
                    }
                ]
            },
            "jobs": {"handlers": [{"name": "tick", "handler": job, "schedule": "0 * * * *"}]},
            "ui": {
                "pages": [
                    {
                        "path": f"/{name}",
                        "component": "ui/pages/Main.js",
                        "title": title,
                        "permissions": [f"{name}:read"],
                    }
                ],
                "navigation": [{"label": title, "path": f"/{name}"}],
            },
        },
        "permissions": [f"{name}:read"],
        "config": {"schema": {"greeting": {"type": "string", "default": "Hello"}}},
    }
    files = {
        "module.json": json.dumps(manifest, indent=2) + "\n",
        "module.schema.json": render_schema(),
        "ui/pages/Main.js": PAGE,
    }
    if typescript:
        manifest["dependencies"] = {"system": {"node": ">=20.0.0"}}
        files["module.json"] = json.dumps(manifest, indent=2) + "\n"
        files.update(
            {
                "handlers/hello.ts": TS_HANDLER,
                "jobs/tick.ts": TS_JOB,
                "lib/greeting.mjs": TS_GREETING,
                "tests/greeting.test.mjs": TS_TEST,
                "modhub.d.ts": TYPES.read_text("utf-8"),
                "tsconfig.json": TSCONFIG,
            }
        )
    else:
        files.update(
            {
                "handlers/__init__.py": "",
                "handlers/hello.py": PY_HANDLER,
                "jobs/__init__.py": "",
                "jobs/tick.py": PY_JOB,
                "tests/test_hello.py": PY_TEST,
            }
        )
    return files


PAGE = """\
// The module's console page: an ES module exporting mount and unmount.
export async function mount(element, context) {
  const response = await context.fetch(`${context.apiBase}/hello`);
  const body = await response.json();
  element.textContent = body.message;
}

export function unmount(element) {
  element.textContent = "";
}
"""

PY_HANDLER = '''\
"""GET /hello: a greeting for the caller, counted in the module's store."""


def handler(request):
    count = request.store.incr("hellos")
    name = request.user.username if request.user else "world"
    return {"message": f"{request.config.get('greeting', 'Hello')}, {name}!", "count": count}
'''

PY_JOB = '''\
"""Job tick: remember when it last ran."""


def handler(context):
    context.store.set("last-tick", context.scheduled_time.isoformat())
    return {"tick": context.scheduled_time.isoformat()}
'''

PY_TEST = '''\
"""Run the handler as the platform would (pytest tests/)."""

from pathlib import Path

from modhub.sdk import Request, Store, User
from modhub.sdk.loading import call_handler

MODULE = Path(__file__).resolve().parents[1]


def test_hello_greets_the_caller_and_counts() -> None:
    store = Store.in_memory()
    request = Request(
        method="GET",
        path="/hello",
        user=User("ada", "admin"),
        config={"greeting": "Hi"},
        store=store,
    )
    first = call_handler(MODULE, "handlers/hello.py", request)
    second = call_handler(MODULE, "handlers/hello.py", request)
    assert first.json == {"message": "Hi, ada!", "count": 1}
    assert second.json["count"] == 2
'''

TS_HANDLER = """\
// GET /hello: a greeting for the caller, counted in the module's store.
import type { Request } from "../modhub";
import { greeting } from "../lib/greeting.mjs";

export async function handler(request: Request) {
  const count = await request.store.incr("hellos");
  const name = request.user ? request.user.username : "world";
  return { message: greeting(String(request.config.greeting ?? "Hello"), name), count };
}
"""

TS_JOB = """\
// Job tick: remember when it last ran.
import type { JobContext } from "../modhub";

export async function handler(context: JobContext) {
  await context.store.set("last-tick", context.scheduledTime.toISOString());
  return { tick: context.scheduledTime.toISOString() };
}
"""

TS_GREETING = """\
// The module's logic, in plain JavaScript so that `node --test tests/` runs it as it is.

/** @param {string} greeting @param {string} name @returns {string} */
export function greeting(greeting, name) {
  return `${greeting}, ${name}!`;
}
"""

TS_TEST = """\
// node --test tests/
import assert from "node:assert/strict";
import { test } from "node:test";
import { greeting } from "../lib/greeting.mjs";

test("greets by name", () => {
  assert.equal(greeting("Hi", "ada"), "Hi, ada!");
});
"""

TSCONFIG = """\
{
  "compilerOptions": {
    "target": "ES2022",
    "module": "ESNext",
    "moduleResolution": "Bundler",
    "strict": true,
    "noEmit": true,
    "allowJs": true,
    "allowImportingTsExtensions": true,
    "types": []
  },
  "include": ["handlers", "jobs", "lib", "modhub.d.ts"]
}
"""
