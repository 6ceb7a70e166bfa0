"""Serve the console, the navigation of enabled modules, and their page components.

A module's component files are served only while it is ENABLED, only from the folders
its declared pages live in, and only as files that exist in its installed code. A module's
page runs in a sandboxed frame (`/ui/page-frame`, an opaque origin): it never sees the
console's token, and reaches its own routes only through the console's bridge.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path, PurePosixPath
from typing import Annotated

import anyio.from_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from modhub.api.deps import ServicesDep, authenticated
from modhub.api.problems import responses
from modhub.auth import Principal
from modhub.errors import NotFound
from modhub.lifecycle import typescript
from modhub.manifest.loader import MANIFEST_FILE
from modhub.registry import Status
from modhub.registry.types import Shape

STATIC = Path(__file__).parent / "static"
# What a module's UI folder may serve: scripts, styles, images and fonts. Never a document
# (.html, .xml) that the browser would open on the console's origin, nor data (.json).
MODULE_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
# The console: its own scripts and styles only; module pages only in frames of its origin;
# never framed itself.
CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The document a module page runs in: an opaque origin (sandbox without allow-same-origin),
# even when opened at the top, so its scripts cannot read the console's storage or DOM; no
# network of its own (connect-src 'none'): its one way to the API is the console's bridge.
FRAME_CSP = (
    "sandbox allow-scripts allow-forms; default-src 'none'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "media-src 'self' data: blob:; connect-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'"
)
# A module file: public (served without a token) and imported by the opaque-origin frame
# (CORS from origin null); opened as a document (an SVG), it is an inert sandbox.
MODULE_FILE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Access-Control-Allow-Origin": "*",
    "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'",
    "Cross-Origin-Resource-Policy": "cross-origin",
}
Caller = Annotated[Principal, Depends(authenticated)]


class NavEntry(Shape):
    module: str
    label: str
    path: str
    icon: str | None
    order: int
    title: str
    component_url: str
    api_base: str


class Me(Shape):
    username: str
    role: str
    permissions: list[str]


ui_api_router = APIRouter(tags=["console"])


@ui_api_router.get("/auth/me", responses=responses(401))
def me(principal: Caller) -> Me:
    """Return the calling user and their permissions."""
    return Me(
        username=principal.username, role=principal.role, permissions=sorted(principal.permissions)
    )


@ui_api_router.get("/ui/navigation", responses=responses(401))
def navigation(svc: ServicesDep, principal: Caller) -> list[NavEntry]:
    """Return the console navigation of every ENABLED module the caller may see, by order."""
    entries: list[NavEntry] = []
    for name, routes in svc.routes.table.items():
        manifest, _ = svc.registry.version_info(name, routes.version)
        pages = {p.path: p for p in manifest.capabilities.ui.pages}
        for item in manifest.capabilities.ui.navigation:
            page = pages.get(item.path)
            if page is None or not all(principal.can(p) for p in page.permissions):
                continue
            entries.append(
                NavEntry(
                    module=name,
                    label=item.label,
                    path=item.path,
                    icon=item.icon or page.icon,
                    order=item.order,
                    title=page.title,
                    component_url=f"/ui/modules/{name}/{page.component}",
                    api_base=f"/api/v1/m/{name}",
                )
            )
    return sorted(entries, key=lambda e: (e.order, e.label))


console_router = APIRouter(include_in_schema=False)


@console_router.get("/ui/modules/{name}/{file_path:path}")
def module_file(name: str, file_path: str, svc: ServicesDep) -> Response:
    """Serve a file of an ENABLED module's UI folder (the folders of its declared pages)."""
    served = svc.routes.table.get(name)
    if served is None:
        raise NotFound(f"no enabled module named '{name}'")
    manifest, row = svc.registry.version_info(name, served.version)
    if row.path is None or svc.registry.get(name).status != Status.ENABLED:
        raise NotFound(f"module '{name}' has no UI files")
    folders = {str(PurePosixPath(p.component).parent) for p in manifest.capabilities.ui.pages}
    relative = PurePosixPath(file_path)
    if ".." in relative.parts or (
        str(relative.parent) not in folders
        and not any(relative.is_relative_to(f) for f in folders if f != ".")
    ):
        raise NotFound(f"'{file_path}' is not in the UI folder of module '{name}'")
    if file_path in {p.component for p in manifest.capabilities.ui.pages}:
        # A .tsx/.jsx/.ts page: the console loads what esbuild made of it at install.
        env = svc.lifecycle.layout.env(name, served.version)
        compiled = typescript.page_output(env, file_path)
        if compiled is not None:
            if not svc.materializer.ready(name, served.version):
                anyio.from_thread.run(svc.materializer.ensure, name, served.version)
            if not compiled.is_file():
                raise NotFound(f"module '{name}' has no compiled page '{file_path}'")
            return FileResponse(compiled, media_type="text/javascript", headers=MODULE_FILE_HEADERS)
    if not _servable(relative):
        raise NotFound(f"'{file_path}' is not a UI file of module '{name}'")
    # This node's own copy of the version (the row's path is the installing node's, maybe
    # on another machine): materialized from the database first if this node lacks it.
    if not svc.materializer.ready(name, served.version):
        anyio.from_thread.run(svc.materializer.ensure, name, served.version)
    root = svc.lifecycle.layout.code(name, served.version).resolve()
    target = (root / file_path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise NotFound(f"module '{name}' has no UI file '{file_path}'")
    return FileResponse(
        target, media_type=MODULE_TYPES[target.suffix.lower()], headers=MODULE_FILE_HEADERS
    )


def _servable(relative: PurePosixPath) -> bool:
    """Whether a file may be served to the browser: a script, style, image or font, never a
    document, the manifest, module code or a hidden file. (A page component at the module
    root puts the whole root in its UI folder, next to handlers and module.json; these files
    are served without a token.)"""
    return (
        relative.suffix.lower() in MODULE_TYPES
        and relative.name != MANIFEST_FILE
        and not any(part.startswith(".") for part in relative.parts)
    )


PAGES = ("/", "/login", "/modules", "/modules/{name}", "/m/{rest:path}", "/cluster")
ASSETS = ("/{name}.js", "/{name}.css", "/views/{name}.js")
PAGE_FRAME = "/ui/page-frame"


def console_page() -> Response:
    """Serve index.html: the console's router takes the path from there."""
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONSOLE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def page_frame() -> Response:
    """Serve the document a module's page runs in (static/page-frame.html), sandboxed."""
    return FileResponse(
        STATIC / "page-frame.html",
        media_type="text/html",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": FRAME_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )


def console_asset(request: Request) -> Response:
    """Serve one of the console's own files."""
    asset = request.url.path.lstrip("/")
    target = (STATIC / asset).resolve()
    if not target.is_relative_to(STATIC.resolve()) or not target.is_file():
        raise NotFound(f"no such console file: /{asset}")
    # Revalidated on every load (ETag): after an upgrade, no module of the console
    # may come from the browser's heuristic cache while index.html is new.
    return FileResponse(
        target,
        media_type=_content_type(target),
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


# Only the console's own paths: an unknown /api/... path stays a 404 (or 405) problem.
for _path in PAGES:
    console_router.add_api_route(_path, console_page, methods=["GET"])
for _path in ASSETS:
    console_router.add_api_route(_path, console_asset, methods=["GET"])
console_router.add_api_route(PAGE_FRAME, page_frame, methods=["GET"])


def _content_type(path: Path) -> str:
    return (
        MODULE_TYPES.get(path.suffix)
        or mimetypes.guess_type(path.name)[0]
        or "application/octet-stream"
    )
