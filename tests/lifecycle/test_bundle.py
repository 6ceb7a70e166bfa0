"""Bundles: safe extraction of folders, zips and tarballs; packing, hashing, permissions."""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from modhub.errors import InvalidInput
from modhub.lifecycle.bundle import (
    MANIFEST_FILE,
    BundleError,
    Limits,
    extract_bundle,
    hash_tree,
    make_read_only,
    make_writable,
    pack_folder,
    remove_tree,
    verify_tree,
)

MANIFEST = b'{"name": "demo", "version": "1.0.0"}'
MiB = 1024 * 1024
Entry = tuple[str, bytes | None]  # (name, content); None makes a directory
GOOD: list[Entry] = [
    (MANIFEST_FILE, MANIFEST),
    ("handlers/", None),
    ("handlers/main.py", b"print('hi')\n"),
    ("ui/page.js", b"export default 1;\n"),
]


def make_zip(path: Path, entries: list[Entry]) -> Path:
    """Write a zip holding `entries`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, b"" if content is None else content)
    return path


def make_tar(path: Path, entries: list[Entry], mode: int = 0o644) -> Path:
    """Write a .tar.gz holding `entries`."""
    with tarfile.open(path, "w:gz") as archive:
        for name, content in entries:
            member = tarfile.TarInfo(name)
            if content is None:
                member.type, member.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(member)
            else:
                member.size, member.mode = len(content), mode
                archive.addfile(member, io.BytesIO(content))
    return path


Maker = Callable[[Path, list[Entry]], Path]


def add_tar_members(path: Path, members: list[tarfile.TarInfo]) -> Path:
    """Write a .tar.gz with a manifest and the bodiless `members`."""
    with tarfile.open(path, "w:gz") as archive:
        manifest = tarfile.TarInfo(MANIFEST_FILE)
        manifest.size = len(MANIFEST)
        archive.addfile(manifest, io.BytesIO(MANIFEST))
        for member in members:
            archive.addfile(member)
    return path


def refused(source: Path, dest: Path, code: str, path: str, limits: Limits = Limits()) -> None:
    """Assert that extracting `source` fails with `code` naming `path`, leaving nothing."""
    with pytest.raises(BundleError) as caught:
        extract_bundle(source, dest, limits)
    error = caught.value
    assert error.errors is not None
    assert error.errors[0]["code"] == code, error.detail
    assert error.errors[0]["path"] == path
    assert error.code == code
    assert error.path == path
    assert set(error.errors[0]) == {"path", "code", "message"}
    if path:
        assert path in error.detail
    assert not dest.exists()
    assert not os.path.lexists(dest)


def files_of(root: Path) -> dict[str, bytes]:
    """Return every file below `root` with its content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def mode(path: Path) -> int:
    """Return the permission bits of `path`."""
    return stat.S_IMODE(path.lstat().st_mode)


# -- valid bundles ---------------------------------------------------------------------------


def test_bundle_error_is_invalid_input() -> None:
    error = BundleError("x", errors=[{"path": "a", "code": "unsafe_path", "message": "m"}])
    assert isinstance(error, InvalidInput)
    assert error.kind == "invalid-bundle"
    assert error.status == 422


def test_zip_extracts(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "module"
    root = extract_bundle(make_zip(tmp_path / "m.zip", GOOD), dest)
    assert root == dest
    assert files_of(root) == {n: c for n, c in GOOD if c is not None}
    assert mode(dest) == 0o755
    assert mode(dest / "handlers") == 0o755
    assert mode(dest / "ui") == 0o755
    assert mode(dest / "handlers" / "main.py") == 0o644


@pytest.mark.parametrize("name", ["m.tar.gz", "m.tgz", "M.TAR.GZ"])
def test_tar_gz_extracts(tmp_path: Path, name: str) -> None:
    root = extract_bundle(make_tar(tmp_path / name, GOOD), tmp_path / "dest")
    assert files_of(root) == {n: c for n, c in GOOD if c is not None}


def test_archive_is_recognised_by_content_without_suffix(tmp_path: Path) -> None:
    make_zip(tmp_path / "a.zip", GOOD).rename(tmp_path / "upload-zip")
    make_tar(tmp_path / "a.tgz", GOOD).rename(tmp_path / "upload-tar")
    for upload in ("upload-zip", "upload-tar"):
        root = extract_bundle(tmp_path / upload, tmp_path / f"dest-{upload}")
        assert (root / "handlers" / "main.py").is_file()


def test_modes_from_the_archive_are_dropped(tmp_path: Path) -> None:
    source = make_tar(tmp_path / "m.tgz", [(MANIFEST_FILE, MANIFEST), ("run.sh", b"x")], 0o6777)
    root = extract_bundle(source, tmp_path / "dest")
    assert mode(root / "run.sh") == 0o644
    assert mode(root / MANIFEST_FILE) == 0o644


def test_dot_prefixed_tar_names_extract(tmp_path: Path) -> None:
    source = make_tar(tmp_path / "m.tgz", [("./", None), ("./module.json", MANIFEST)])
    assert files_of(extract_bundle(source, tmp_path / "dest")) == {MANIFEST_FILE: MANIFEST}


def test_folder_is_copied(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "handlers" / "__pycache__").mkdir(parents=True)
    (source / ".git").mkdir()
    (source / "empty").mkdir()
    (source / MANIFEST_FILE).write_bytes(MANIFEST)
    (source / "handlers" / "main.py").write_text("x = 1\n")
    (source / "handlers" / "main.pyc").write_bytes(b"\0")
    (source / "handlers" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (source / ".git" / "config").write_text("[core]\n")
    os.chmod(source / "handlers" / "main.py", 0o755)
    root = extract_bundle(source, tmp_path / "dest")
    assert files_of(root) == {MANIFEST_FILE: MANIFEST, "handlers/main.py": b"x = 1\n"}
    assert (root / "empty").is_dir()
    assert mode(root / "handlers" / "main.py") == 0o644
    assert (source / "handlers" / "main.py").exists()  # a copy, not a move


@pytest.mark.parametrize(("make", "name"), [(make_zip, "m.zip"), (make_tar, "m.tgz")])
def test_single_wrapping_folder_is_moved_up(tmp_path: Path, make: Maker, name: str) -> None:
    entries: list[Entry] = [
        ("demo-1.0.0/", None),
        ("demo-1.0.0/module.json", MANIFEST),
        ("demo-1.0.0/handlers/main.py", b"x"),
        ("demo-1.0.0/demo-1.0.0/inner.txt", b"same name as the wrapper"),
        ("demo-1.0.0/.modhub-unwrap-0", b"same name as the temporary folder"),
    ]
    dest = tmp_path / "dest"
    root = extract_bundle(make(tmp_path / name, entries), dest)
    assert root == dest
    assert files_of(root) == {
        MANIFEST_FILE: MANIFEST,
        "handlers/main.py": b"x",
        "demo-1.0.0/inner.txt": b"same name as the wrapper",
        ".modhub-unwrap-0": b"same name as the temporary folder",
    }
    names = sorted(p.name for p in dest.iterdir())
    assert names == [".modhub-unwrap-0", "demo-1.0.0", "handlers", MANIFEST_FILE]


def test_wrapping_folder_without_manifest_is_refused(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "m.zip", [("demo/", None), ("demo/readme.md", b"x")])
    refused(source, tmp_path / "dest", "missing_manifest", MANIFEST_FILE)


def test_two_top_level_folders_are_not_unwrapped(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "m.zip", [("a/module.json", MANIFEST), ("b/x", b"x")])
    refused(source, tmp_path / "dest", "missing_manifest", MANIFEST_FILE)


def test_macos_litter_is_skipped(tmp_path: Path) -> None:
    entries: list[Entry] = [
        ("demo/module.json", MANIFEST),
        ("__MACOSX/", None),
        ("__MACOSX/demo/._module.json", b"\0\5\26\7"),
    ]
    root = extract_bundle(make_zip(tmp_path / "m.zip", entries), tmp_path / "dest")
    assert files_of(root) == {MANIFEST_FILE: MANIFEST}


# -- refusals --------------------------------------------------------------------------------


def test_missing_manifest(tmp_path: Path) -> None:
    source = make_zip(tmp_path / "m.zip", [("readme.md", b"hello")])
    refused(source, tmp_path / "dest", "missing_manifest", MANIFEST_FILE)


def test_empty_folder_has_no_manifest(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    refused(tmp_path / "src", tmp_path / "dest", "missing_manifest", MANIFEST_FILE)


UNSAFE = [
    "../evil.txt",
    "a/../../evil.txt",
    "a/..",
    "/etc/evil.txt",
    "//server/share/evil.txt",
    "C:/evil.txt",
    "c:evil.txt",
    "a\\..\\evil.txt",
    "dir\\file.txt",
]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_zip_paths(tmp_path: Path, name: str) -> None:
    source = make_zip(tmp_path / "m.zip", [(MANIFEST_FILE, MANIFEST), (name, b"pwned")])
    refused(source, tmp_path / "dest", "unsafe_path", name)
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_tar_paths(tmp_path: Path, name: str) -> None:
    source = make_tar(tmp_path / "m.tgz", [(MANIFEST_FILE, MANIFEST), (name, b"pwned")])
    refused(source, tmp_path / "dest", "unsafe_path", name)
    assert not (tmp_path / "evil.txt").exists()


def test_unsafe_directory_entry(tmp_path: Path) -> None:
    source = make_tar(tmp_path / "m.tgz", [(MANIFEST_FILE, MANIFEST), ("../up", None)])
    refused(source, tmp_path / "dest", "unsafe_path", "../up")
    assert not (tmp_path / "up").exists()


@pytest.mark.parametrize(
    "entries",
    [
        [(MANIFEST_FILE, MANIFEST), ("a.txt", b"1"), ("a.txt", b"2")],
        [(MANIFEST_FILE, MANIFEST), ("a.txt", b"1"), ("a.txt/b.txt", b"2")],
        [(MANIFEST_FILE, MANIFEST), ("a/", None), ("a", b"file over a dir")],
    ],
)
def test_clashing_entries_are_refused(tmp_path: Path, entries: list[Entry]) -> None:
    source = make_tar(tmp_path / "m.tgz", entries)
    refused(source, tmp_path / "dest", "unsafe_path", entries[-1][0])


def zip_with_mode(path: Path, name: str, file_type: int) -> Path:
    """Write a zip with a manifest and an entry whose external attrs give `file_type`."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(MANIFEST_FILE, MANIFEST)
        info = zipfile.ZipInfo(name)
        info.create_system = 3
        info.external_attr = (file_type | 0o777) << 16
        archive.writestr(info, b"/etc/passwd")
    return path


def test_zip_symlink(tmp_path: Path) -> None:
    source = zip_with_mode(tmp_path / "m.zip", "link", stat.S_IFLNK)
    refused(source, tmp_path / "dest", "link_not_allowed", "link")


@pytest.mark.parametrize("file_type", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK])
def test_zip_special_files(tmp_path: Path, file_type: int) -> None:
    source = zip_with_mode(tmp_path / "m.zip", "dev", file_type)
    refused(source, tmp_path / "dest", "special_file", "dev")


def tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    """Return a bodiless tar member of type `kind`."""
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, linkname
    return member


@pytest.mark.parametrize(
    "member",
    [
        tar_member("link", tarfile.SYMTYPE, "/etc/passwd"),
        tar_member("link", tarfile.SYMTYPE, "module.json"),
        tar_member("link", tarfile.LNKTYPE, "module.json"),
    ],
    ids=["symlink-out", "symlink-in", "hardlink"],
)
def test_tar_links(tmp_path: Path, member: tarfile.TarInfo) -> None:
    source = add_tar_members(tmp_path / "m.tgz", [member])
    refused(source, tmp_path / "dest", "link_not_allowed", "link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_special_files(tmp_path: Path, kind: bytes) -> None:
    source = add_tar_members(tmp_path / "m.tgz", [tar_member("dev", kind)])
    refused(source, tmp_path / "dest", "special_file", "dev")


def test_folder_with_symlink(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / MANIFEST_FILE).write_bytes(MANIFEST)
    (source / "sub" / "link").symlink_to("/etc/passwd")
    refused(source, tmp_path / "dest", "link_not_allowed", "sub/link")


def test_folder_with_symlinked_dir(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / MANIFEST_FILE).write_bytes(MANIFEST)
    (source / "etc").symlink_to("/etc", target_is_directory=True)
    refused(source, tmp_path / "dest", "link_not_allowed", "etc")


def test_folder_with_fifo(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / MANIFEST_FILE).write_bytes(MANIFEST)
    os.mkfifo(source / "pipe")
    refused(source, tmp_path / "dest", "special_file", "pipe")


@pytest.mark.parametrize(("make", "name"), [(make_zip, "m.zip"), (make_tar, "m.tgz")])
def test_too_many_entries(tmp_path: Path, make: Maker, name: str) -> None:
    entries: list[Entry] = [(MANIFEST_FILE, MANIFEST), *[(f"f{i}", b"x") for i in range(4)]]
    source = make(tmp_path / name, entries)
    refused(source, tmp_path / "dest", "too_many_entries", "f2", Limits(max_entries=3))
    assert extract_bundle(source, tmp_path / "ok", Limits(max_entries=5)) == tmp_path / "ok"


def test_too_many_entries_in_folder(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / MANIFEST_FILE).write_bytes(MANIFEST)
    for i in range(3):
        (source / f"f{i}").write_bytes(b"x")
    refused(source, tmp_path / "dest", "too_many_entries", "module.json", Limits(max_entries=3))


def zeros_zip(path: Path, name: str, size: int) -> Path:
    """Write a zip with a manifest and `size` zero bytes in `name`, streaming them."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST_FILE, MANIFEST)
        with archive.open(name, "w", force_zip64=True) as entry:
            block = bytes(MiB)
            for _ in range(size // MiB):
                entry.write(block)
    return path


def test_zip_bomb_stops_at_the_file_limit(tmp_path: Path) -> None:
    source = zeros_zip(tmp_path / "bomb.zip", "zeros.bin", 32 * MiB)
    assert source.stat().st_size < 100_000  # highly compressible
    refused(source, tmp_path / "dest", "too_large", "zeros.bin", Limits(max_file_bytes=2 * MiB))


def test_zip_bomb_stops_at_the_total_limit(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST_FILE, MANIFEST)
        for i in range(4):
            archive.writestr(f"part{i}.bin", bytes(MiB))
    limits = Limits(max_bytes=3 * MiB, max_file_bytes=2 * MiB)
    refused(tmp_path / "bomb.zip", tmp_path / "dest", "too_large", "part2.bin", limits)


def test_zip_whose_declared_size_lies(tmp_path: Path) -> None:
    """A zip claiming 100 bytes for 16 MiB of data never gets more than it claims through."""
    source = zeros_zip(tmp_path / "liar.zip", "zeros.bin", 16 * MiB)
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = archive.getinfo("zeros.bin")
    central = data.rfind(b"PK\x01\x02")
    assert data[central + 46 : central + 46 + len(b"zeros.bin")] == b"zeros.bin"
    data[central + 24 : central + 28] = struct.pack("<I", 100)  # uncompressed size
    local = info.header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    data[local + 22 : local + 26] = struct.pack("<I", 100)
    source.write_bytes(bytes(data))
    with zipfile.ZipFile(source) as archive:
        assert archive.getinfo("zeros.bin").file_size == 100
    refused(source, tmp_path / "dest", "bad_archive", "zeros.bin", Limits(max_file_bytes=MiB))
    refused(source, tmp_path / "dest", "bad_archive", "zeros.bin")


def test_tar_bomb_stops_at_the_file_limit(tmp_path: Path) -> None:
    source = tmp_path / "bomb.tgz"
    with tarfile.open(source, "w:gz") as archive:
        manifest = tarfile.TarInfo(MANIFEST_FILE)
        manifest.size = len(MANIFEST)
        archive.addfile(manifest, io.BytesIO(MANIFEST))
        zeros = tarfile.TarInfo("zeros.bin")
        zeros.size = 16 * MiB
        archive.addfile(zeros, io.BytesIO(bytes(zeros.size)))
    assert source.stat().st_size < 100_000
    refused(source, tmp_path / "dest", "too_large", "zeros.bin", Limits(max_file_bytes=MiB))


def test_folder_over_the_limit(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / MANIFEST_FILE).write_bytes(MANIFEST)
    (source / "big.bin").write_bytes(bytes(2 * MiB))
    refused(source, tmp_path / "dest", "too_large", "big.bin", Limits(max_file_bytes=MiB))


def test_garbage_zip(tmp_path: Path) -> None:
    (tmp_path / "m.zip").write_bytes(b"this is not a zip" * 100)
    refused(tmp_path / "m.zip", tmp_path / "dest", "bad_archive", "")


def test_garbage_tar_gz(tmp_path: Path) -> None:
    (tmp_path / "m.tar.gz").write_bytes(b"this is not a tarball" * 100)
    refused(tmp_path / "m.tar.gz", tmp_path / "dest", "bad_archive", "")


def test_truncated_tar_gz(tmp_path: Path) -> None:
    entries: list[Entry] = [(MANIFEST_FILE, MANIFEST), ("data.bin", os.urandom(200_000))]
    source = make_tar(tmp_path / "m.tgz", entries)
    source.write_bytes(source.read_bytes()[:150_000])
    refused(source, tmp_path / "dest", "bad_archive", "data.bin")


def test_zip_with_bad_crc(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "m.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(MANIFEST_FILE, MANIFEST)
        archive.writestr("data.txt", b"A" * 1000)
    data = (tmp_path / "m.zip").read_bytes().replace(b"A" * 1000, b"A" * 999 + b"B")
    (tmp_path / "m.zip").write_bytes(data)
    refused(tmp_path / "m.zip", tmp_path / "dest", "bad_archive", "data.txt")


def test_encrypted_zip_entry(tmp_path: Path) -> None:
    make_zip(tmp_path / "m.zip", GOOD)
    data = bytearray((tmp_path / "m.zip").read_bytes())
    central = data.rfind(b"ui/page.js") - 46
    assert data[central : central + 4] == b"PK\x01\x02"
    data[central + 8] |= 0x1  # the "encrypted" flag bit
    (tmp_path / "m.zip").write_bytes(bytes(data))
    refused(tmp_path / "m.zip", tmp_path / "dest", "bad_archive", "ui/page.js")


def test_unsupported_format(tmp_path: Path) -> None:
    (tmp_path / "m.rar").write_bytes(b"Rar!\x1a\x07\x00" + bytes(100))
    refused(tmp_path / "m.rar", tmp_path / "dest", "unsupported_format", "")
    refused(tmp_path / "nothing-here", tmp_path / "dest", "unsupported_format", "")


def test_existing_dest_is_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        extract_bundle(make_zip(tmp_path / "m.zip", GOOD), dest)
    assert (dest / "keep.txt").read_text() == "mine"


def test_dest_inside_the_source_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).write_bytes(MANIFEST)
    with pytest.raises(ValueError, match="inside"):
        extract_bundle(tmp_path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_failure_after_files_were_written_removes_everything(tmp_path: Path) -> None:
    entries: list[Entry] = [*GOOD, ("late/../../evil", b"x")]
    dest = tmp_path / "parent" / "dest"
    refused(make_zip(tmp_path / "m.zip", entries), dest, "unsafe_path", "late/../../evil")
    assert dest.parent.is_dir()
    assert list(dest.parent.iterdir()) == []


# -- packing, hashing, permissions -----------------------------------------------------------


def module_folder(root: Path) -> Path:
    """Create a module folder with nested files and litter that packing skips."""
    (root / "handlers" / "__pycache__").mkdir(parents=True)
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "ui" / "pages").mkdir(parents=True)
    (root / MANIFEST_FILE).write_bytes(MANIFEST)
    (root / "handlers" / "main.py").write_text("def handle(): ...\n")
    (root / "handlers" / "old.pyc").write_bytes(b"\0")
    (root / "handlers" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (root / ".venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "ui" / "pages" / "index.js").write_text("export default 1;\n")
    (root / "README.md").write_text("# demo\n")
    return root


def test_pack_folder_round_trip(tmp_path: Path) -> None:
    folder = module_folder(tmp_path / "src")
    out = pack_folder(folder, tmp_path / "demo.tar.gz")
    assert out == tmp_path / "demo.tar.gz"
    with tarfile.open(out) as archive:
        names = archive.getnames()
        assert all(m.uid == 0 and m.uname == "" for m in archive.getmembers())
    assert names == sorted(names)
    assert names == [
        "README.md",
        "handlers",
        "handlers/main.py",
        MANIFEST_FILE,
        "ui",
        "ui/pages",
        "ui/pages/index.js",
    ]
    root = extract_bundle(out, tmp_path / "dest")
    expected = {
        k: v
        for k, v in hash_tree(folder).items()
        if not k.startswith((".git/", ".venv/")) and "pyc" not in k
    }
    assert hash_tree(root) == expected
    assert set(expected) == {MANIFEST_FILE, "README.md", "handlers/main.py", "ui/pages/index.js"}


def test_pack_folder_skips_its_own_output(tmp_path: Path) -> None:
    folder = module_folder(tmp_path / "src")
    out = pack_folder(folder, folder / "self.tar.gz")
    with tarfile.open(out) as archive:
        assert "self.tar.gz" not in archive.getnames()


def test_pack_folder_refuses_symlinks(tmp_path: Path) -> None:
    folder = module_folder(tmp_path / "src")
    (folder / "ui" / "secret").symlink_to("/etc/shadow")
    with pytest.raises(BundleError) as caught:
        pack_folder(folder, tmp_path / "demo.tar.gz")
    assert caught.value.code == "link_not_allowed"
    assert caught.value.path == "ui/secret"
    assert not (tmp_path / "demo.tar.gz").exists()


def test_hash_tree(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_bytes(b"hello")
    (tmp_path / "x.txt").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "x.txt")
    assert hash_tree(tmp_path) == {
        "a/b/c.txt": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        "x.txt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    }
    with pytest.raises(NotADirectoryError):
        hash_tree(tmp_path / "missing")


def test_verify_tree(tmp_path: Path) -> None:
    root = module_folder(tmp_path / "src")
    recorded = hash_tree(root)
    assert verify_tree(root, recorded) == []
    (root / "handlers" / "main.py").write_text("import os; os.system('evil')\n")
    (root / "README.md").unlink()
    (root / "ui" / "extra.js").write_text("1")
    assert verify_tree(root, recorded) == [
        {"path": "README.md", "change": "missing"},
        {"path": "handlers/main.py", "change": "modified"},
        {"path": "ui/extra.js", "change": "added"},
    ]


def test_verify_missing_tree(tmp_path: Path) -> None:
    changes = verify_tree(tmp_path / "gone", {"b": "0", "a": "0"})
    assert changes == [{"path": "a", "change": "missing"}, {"path": "b", "change": "missing"}]


def test_read_only_and_back(tmp_path: Path) -> None:
    root = extract_bundle(make_zip(tmp_path / "m.zip", GOOD), tmp_path / "dest")
    make_read_only(root)
    for path in [root, *root.rglob("*")]:
        expected = 0o555 if path.is_dir() else 0o444
        assert mode(path) == expected, path
        assert not mode(path) & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    make_writable(root)
    for path in [root, *root.rglob("*")]:
        assert mode(path) == (0o755 if path.is_dir() else 0o644), path


def test_remove_tree(tmp_path: Path) -> None:
    root = extract_bundle(make_zip(tmp_path / "m.zip", GOOD), tmp_path / "dest")
    make_read_only(root)
    remove_tree(root)
    assert not root.exists()
    remove_tree(root)  # absent: no error
    remove_tree(tmp_path / "never" / "existed")


def test_remove_tree_removes_a_link_not_its_target(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "keep.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "target", target_is_directory=True)
    remove_tree(tmp_path / "link")
    assert not os.path.lexists(tmp_path / "link")
    assert (tmp_path / "target" / "keep.txt").exists()
    remove_tree(tmp_path / "target" / "keep.txt")
    assert not (tmp_path / "target" / "keep.txt").exists()
