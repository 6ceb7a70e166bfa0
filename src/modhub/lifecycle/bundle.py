"""Module bundles: safe extraction of a folder, `.zip` or `.tar.gz`, packing, hashing.

Extraction trusts nothing in the archive: every entry name is checked before it is
joined to the destination, links and device files are refused, and the entry count
and byte totals are counted while the data streams, so that a zip bomb stops at the
limit whatever sizes its headers declare. On any failure the destination is removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from modhub.errors import InvalidInput

MANIFEST_FILE = "module.json"
FILE_MODE = 0o644
DIR_MODE = 0o755
READ_ONLY_FILE_MODE = 0o444
READ_ONLY_DIR_MODE = 0o555
CHUNK = 1024 * 1024
IGNORED_DIRS = frozenset({"__pycache__", ".git", ".venv"})
IGNORED_SUFFIXES = (".pyc",)
SKIPPED_TOP_LEVEL = frozenset({"__MACOSX"})
ZIP_SUFFIXES = (".zip",)
TAR_GZ_SUFFIXES = (".tar.gz", ".tgz")
_DRIVE = re.compile(r"^[A-Za-z]:")
_ARCHIVE_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
)
_UNWRAP_NAME = ".modhub-unwrap"


class BundleError(InvalidInput):
    """A bundle is unsafe, too large, corrupt or not a module; `errors` names the entry."""

    title, kind = "Invalid bundle", "invalid-bundle"

    @property
    def code(self) -> str:
        """Return the stable code of the first problem."""
        return str(self.errors[0]["code"]) if self.errors else ""

    @property
    def path(self) -> str:
        """Return the entry the first problem is about ("" for the bundle itself)."""
        return str(self.errors[0]["path"]) if self.errors else ""


@dataclass(frozen=True)
class Limits:
    """How much a bundle may hold, counted on the data itself."""

    max_entries: int = 10_000
    max_bytes: int = 200 * 1024 * 1024
    max_file_bytes: int = 100 * 1024 * 1024


def _refuse(code: str, path: str, message: str) -> BundleError:
    """Build a BundleError for one problem with one entry."""
    detail = f"{message}: '{path}'" if path else message
    return BundleError(detail, errors=[{"path": path, "code": code, "message": message}])


class _Budget:
    """Count entries and bytes against the limits as extraction goes."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.entries = 0
        self.total = 0
        self.current = ""

    def too_many(self, name: str) -> BundleError:
        """Build the error for entry `name`, one past the entry limit."""
        return _refuse("too_many_entries", name, f"more than {self.limits.max_entries} entries")

    def enter(self, name: str) -> None:
        """Count one more entry, named `name`."""
        self.current = name
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise self.too_many(name)

    def spend(self, name: str, size: int, file_total: int) -> None:
        """Count `size` more bytes of entry `name`, now `file_total` bytes long."""
        self.total += size
        if file_total > self.limits.max_file_bytes:
            raise _refuse("too_large", name, f"a file is over {self.limits.max_file_bytes} bytes")
        if self.total > self.limits.max_bytes:
            raise _refuse("too_large", name, f"the bundle is over {self.limits.max_bytes} bytes")


@contextmanager
def _reading(budget: _Budget) -> Iterator[None]:
    """Turn an error from the archive reader into a bad_archive naming the current entry."""
    try:
        yield
    except BundleError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise _refuse("bad_archive", budget.current, f"corrupt archive ({exc})") from exc


def _safe_parts(name: str) -> tuple[str, ...]:
    """Return the components of archive entry `name`, refusing any that could escape."""
    if not name or "\x00" in name:
        raise _refuse("unsafe_path", name, "empty or NUL in an entry name")
    if "\\" in name:
        raise _refuse("unsafe_path", name, "backslash in an entry name")
    if name.startswith("/") or _DRIVE.match(name):
        raise _refuse("unsafe_path", name, "absolute entry name")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse("unsafe_path", name, "'..' in an entry name")
    return parts


class _Writer:
    """Create the checked entries of a bundle below `dest`, never overwriting one."""

    def __init__(self, dest: Path, budget: _Budget) -> None:
        self.dest = dest
        self.budget = budget
        self.kinds: dict[tuple[str, ...], str] = {}

    def _claim(self, name: str, parts: tuple[str, ...], kind: str) -> None:
        """Record `parts` as a file or dir, refusing clashes with earlier entries."""
        for i in range(1, len(parts)):
            if self.kinds.setdefault(parts[:i], "dir") != "dir":
                raise _refuse("unsafe_path", name, "entry below a file")
        previous = self.kinds.get(parts)
        if previous == "file" or (previous == "dir" and kind == "file"):
            raise _refuse("unsafe_path", name, "duplicate entry")
        self.kinds[parts] = kind

    def _mkdirs(self, name: str, path: Path) -> None:
        """Create directory `path` and its missing parents below `dest`, all 0o755."""
        directory = self.dest
        for part in path.relative_to(self.dest).parts:
            directory = directory / part
            if not directory.is_dir():
                self._os(name, directory.mkdir)
                directory.chmod(DIR_MODE)

    def _os(self, name: str, call: Callable[[], object]) -> None:
        """Run a file-system call, refusing an entry name the file system cannot hold."""
        try:
            call()
        except OSError as exc:
            if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ):
                raise _refuse("unsafe_path", name, "entry name the file system refuses") from exc
            raise

    def directory(self, name: str) -> None:
        """Create the directory entry `name`."""
        parts = _safe_parts(name)
        if not parts:
            return
        self._claim(name, parts, "dir")
        self._mkdirs(name, self.dest.joinpath(*parts))

    def file(self, name: str, read: Callable[[int], bytes]) -> None:
        """Create the file entry `name` from the stream `read`, counting every byte."""
        parts = _safe_parts(name)
        if not parts:
            raise _refuse("unsafe_path", name, "file entry without a name")
        self._claim(name, parts, "file")
        target = self.dest.joinpath(*parts)
        self._mkdirs(name, target.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = -1

        def create() -> None:
            nonlocal fd
            fd = os.open(target, flags, FILE_MODE)

        self._os(name, create)
        with os.fdopen(fd, "wb") as out:
            self._copy(name, read, out)
        target.chmod(FILE_MODE)

    def _copy(self, name: str, read: Callable[[int], bytes], out: IO[bytes]) -> None:
        """Stream `read` into `out`, stopping at the limits before writing past them."""
        written = 0
        while True:
            with _reading(self.budget):
                chunk = read(CHUNK)
            if not chunk:
                return
            written += len(chunk)
            self.budget.spend(name, len(chunk), written)
            out.write(chunk)


def _skipped(parts: tuple[str, ...]) -> bool:
    """Tell whether an archive entry is platform litter that is not extracted."""
    return bool(parts) and parts[0] in SKIPPED_TOP_LEVEL


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """Return "dir" or "file" for a zip entry, refusing links and special files."""
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise _refuse("link_not_allowed", info.filename, "links are not allowed")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _refuse("special_file", info.filename, "special files are not allowed")
    if info.flag_bits & 0x1:
        raise _refuse("bad_archive", info.filename, "encrypted entries are not supported")
    return "dir" if info.is_dir() or stat.S_ISDIR(mode) else "file"


def _extract_zip(source: Path, writer: _Writer, budget: _Budget) -> None:
    """Extract the zip `source` entry by entry."""
    with ExitStack() as stack:
        with _reading(budget):
            archive = stack.enter_context(zipfile.ZipFile(source))
        infos = archive.infolist()
        if len(infos) > budget.limits.max_entries:
            raise budget.too_many(infos[budget.limits.max_entries].filename)
        for info in infos:
            budget.enter(info.filename)
            parts = _safe_parts(info.filename)
            kind = _zip_kind(info)
            if _skipped(parts):
                continue
            if kind == "dir":
                writer.directory(info.filename)
                continue
            with _reading(budget):
                stream = archive.open(info)
            with stream:
                writer.file(info.filename, stream.read)


def _tar_kind(member: tarfile.TarInfo) -> str:
    """Return "dir" or "file" for a tar member, refusing links and special files."""
    if member.issym() or member.islnk():
        raise _refuse("link_not_allowed", member.name, "links are not allowed")
    if member.isdir():
        return "dir"
    if member.isreg():
        return "file"
    raise _refuse("special_file", member.name, "special files are not allowed")


def _extract_tar(source: Path, writer: _Writer, budget: _Budget) -> None:
    """Extract the gzip-compressed tar `source` member by member."""
    with ExitStack() as stack:
        with _reading(budget):
            archive = stack.enter_context(tarfile.open(source, "r:gz"))
        members = iter(archive)
        while True:
            with _reading(budget):
                member = next(members, None)
            if member is None:
                return
            budget.enter(member.name)
            parts = _safe_parts(member.name)
            kind = _tar_kind(member)
            if _skipped(parts):
                continue
            if kind == "dir":
                writer.directory(member.name)
                continue
            with _reading(budget):
                stream = archive.extractfile(member)
            if stream is None:
                raise _refuse("bad_archive", member.name, "unreadable member")
            with stream:
                writer.file(member.name, stream.read)


def _walk(folder: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Yield (relative POSIX name, path, lstat) below `folder`, sorted, skipping litter."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name in IGNORED_DIRS or entry.name.endswith(IGNORED_SUFFIXES):
            continue
        path = Path(entry.path)
        info = path.lstat()
        yield entry.name, path, info
        if stat.S_ISDIR(info.st_mode):
            for name, sub, sub_info in _walk(path):
                yield f"{entry.name}/{name}", sub, sub_info


def _folder_kind(name: str, info: os.stat_result) -> str:
    """Return "dir" or "file" for a folder entry, refusing links and special files."""
    if stat.S_ISLNK(info.st_mode):
        raise _refuse("link_not_allowed", name, "links are not allowed")
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    if stat.S_ISREG(info.st_mode):
        return "file"
    raise _refuse("special_file", name, "special files are not allowed")


def _copy_folder(source: Path, writer: _Writer, budget: _Budget) -> None:
    """Copy the folder `source` entry by entry, with the checks of an archive."""
    for name, path, info in _walk(source):
        budget.enter(name)
        if _folder_kind(name, info) == "dir":
            writer.directory(name)
            continue
        with path.open("rb") as stream:
            writer.file(name, stream.read)


_Extractor = Callable[[Path, _Writer, _Budget], None]


def _extractor(source: Path, dest: Path) -> _Extractor:
    """Pick the extractor for `source` by its suffix, else its first bytes."""
    if source.is_dir():
        if dest.resolve().is_relative_to(source.resolve()):
            raise ValueError(f"{dest} is inside the bundle folder {source}")
        return _copy_folder
    if source.is_file():
        lowered = source.name.lower()
        if lowered.endswith(ZIP_SUFFIXES):
            return _extract_zip
        if lowered.endswith(TAR_GZ_SUFFIXES):
            return _extract_tar
        with source.open("rb") as stream:
            magic = stream.read(4)
        if magic in (b"PK\x03\x04", b"PK\x05\x06"):
            return _extract_zip
        if magic.startswith(b"\x1f\x8b"):
            return _extract_tar
    raise _refuse("unsupported_format", "", f"not a folder, .zip, .tar.gz or .tgz: {source.name}")


def _free_name(folder: Path) -> str:
    """Return a name that no entry of `folder` has."""
    taken = {child.name for child in folder.iterdir()}
    number = 0
    while f"{_UNWRAP_NAME}-{number}" in taken:
        number += 1
    return f"{_UNWRAP_NAME}-{number}"


def _unwrap(dest: Path) -> None:
    """Move the content of a single top-level folder holding the manifest up to `dest`."""
    if (dest / MANIFEST_FILE).is_file():
        return
    children = list(dest.iterdir())
    if len(children) != 1 or not (children[0] / MANIFEST_FILE).is_file():
        raise _refuse("missing_manifest", MANIFEST_FILE, f"no {MANIFEST_FILE} at the root")
    wrapper = dest / _free_name(children[0])
    children[0].rename(wrapper)
    for child in wrapper.iterdir():
        child.rename(dest / child.name)
    wrapper.rmdir()


def extract_bundle(source: Path, dest: Path, limits: Limits = Limits()) -> Path:
    """Extract the bundle `source` into the new folder `dest` and return the module root."""
    extract = _extractor(source, dest)
    dest.mkdir(parents=True)  # FileExistsError if it exists: never removed then
    dest.chmod(DIR_MODE)
    budget = _Budget(limits)
    try:
        extract(source, _Writer(dest, budget), budget)
        _unwrap(dest)
    except BaseException:
        remove_tree(dest)
        raise
    return dest


def pack_folder(folder: Path, out: Path) -> Path:
    """Write the content of `folder` to the .tar.gz `out`, refusing links; return `out`."""
    skip = out.resolve()
    try:
        with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as archive:
            for name, path, info in _walk(folder):
                kind = _folder_kind(name, info)
                if path.resolve() != skip:
                    _pack_entry(archive, name, path, kind)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def _pack_entry(archive: tarfile.TarFile, name: str, path: Path, kind: str) -> None:
    """Add one file or dir to `archive` under `name`, with neutral owner and modes."""
    member = archive.gettarinfo(str(path), arcname=name)
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mode = DIR_MODE if kind == "dir" else FILE_MODE
    if kind == "dir":
        archive.addfile(member)
        return
    with path.open("rb") as stream:
        archive.addfile(member, stream)


def _raise(exc: OSError) -> None:
    """Re-raise an error met while walking a tree."""
    raise exc


def _regular_files(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (relative POSIX path, path) of every regular file below `root`."""
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    for top, _dirs, files in os.walk(root, onerror=_raise):
        for file in files:
            path = Path(top, file)
            if stat.S_ISREG(path.lstat().st_mode):
                yield path.relative_to(root).as_posix(), path


def _sha256(path: Path) -> str:
    """Return the sha256 hex digest of the file `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """Return the sha256 of every regular file below `root`, by relative POSIX path."""
    return {name: _sha256(path) for name, path in sorted(_regular_files(root))}


def verify_tree(root: Path, recorded: Mapping[str, str]) -> list[dict[str, str]]:
    """List the files below `root` modified, missing or added since `recorded`."""
    current = hash_tree(root) if root.is_dir() else {}
    changes = [
        {"path": name, "change": "missing" if name not in current else "modified"}
        for name, digest in recorded.items()
        if current.get(name) != digest
    ]
    changes += [{"path": name, "change": "added"} for name in current if name not in recorded]
    return sorted(changes, key=lambda change: change["path"])


def _chmod_tree(root: Path, file_mode: int, dir_mode: int) -> None:
    """Set `file_mode` on every file and `dir_mode` on every dir of `root`, links skipped."""
    if root.is_symlink():
        return
    if not root.is_dir():
        root.chmod(file_mode)
        return
    root.chmod(dir_mode)
    for top, dirs, files in os.walk(root, onerror=_raise):
        for name in dirs:
            path = Path(top, name)
            if not path.is_symlink():
                path.chmod(dir_mode)
        for name in files:
            path = Path(top, name)
            if not path.is_symlink():
                path.chmod(file_mode)


def make_read_only(root: Path) -> None:
    """Make every file below `root` 0o444 and every dir 0o555."""
    _chmod_tree(root, READ_ONLY_FILE_MODE, READ_ONLY_DIR_MODE)


def make_writable(root: Path) -> None:
    """Make every file below `root` 0o644 and every dir 0o755."""
    _chmod_tree(root, FILE_MODE, DIR_MODE)


def remove_tree(root: Path) -> None:
    """Delete `root` and everything below it, read-only or not; nothing if it is absent."""
    if not os.path.lexists(root):
        return
    if root.is_symlink() or not root.is_dir():
        root.unlink()
        return
    make_writable(root)
    shutil.rmtree(root)
