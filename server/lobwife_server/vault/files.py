"""The vault's files on disk: paths checked component by component, whole-file writes.

Blocking; the sync calls these from a worker thread. Every path is relative to the vault root and
made of names lobwife chose (``010-tasks``, ``active``, ``T42.md``); still, each component below
the root is checked with ``lstat`` and a symlink anywhere refuses the path (:class:`UnsafePath`),
since a symlink pushed by someone could point out of the vault. Reading and writing also open
with ``O_NOFOLLOW``, and a write goes to a temporary file in the same folder that is renamed over
the target, so a file is never half-written (a full disk leaves the old content in place).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path, PurePosixPath

TMP_MARK = ".lobwife-tmp-"


class UnsafePath(Exception):
    """A path lobwife will not read or write (a symlink on the way, a name that is not plain)."""


def _parts(rel: str) -> tuple[str, ...]:
    parts = PurePosixPath(rel).parts
    if not parts or any(p in ("", ".", "..") or "/" in p or "\0" in p or p.startswith("/") for p in parts):
        raise UnsafePath(f"{rel!r} is not a plain relative path")
    return parts


def check(root: Path, rel: str) -> Path:
    """``root / rel`` once no component below ``root`` is a symlink (missing ones are fine)."""
    cur = root
    walked: list[str] = []
    for part in _parts(rel):
        cur = cur / part
        walked.append(part)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"{'/'.join(walked)} is a symlink; lobwife does not write through one")
    return cur


def ensure_dir(root: Path, rel: str) -> Path:
    """Creates ``rel`` (and its parents) as real directories; UnsafePath if one is a symlink or a file."""
    cur = root
    walked: list[str] = []
    for part in _parts(rel):
        cur = cur / part
        walked.append(part)
        with contextlib.suppress(FileExistsError):
            os.mkdir(cur)
        st = os.lstat(cur)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"{'/'.join(walked)} is a symlink; lobwife does not write through one")
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(f"{'/'.join(walked)} is not a directory")
    return cur


def read_text(root: Path, rel: str) -> str | None:
    """The file's text, None when it does not exist; UnsafePath for a symlink or a non-regular file."""
    path = check(root, rel)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if os.path.islink(path):
            raise UnsafePath(f"{rel} is a symlink; lobwife does not read through one") from None
        raise e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UnsafePath(f"{rel} is not a regular file")
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafePath(f"{rel} is not UTF-8 text") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_text(root: Path, rel: str, text: str) -> None:
    """Writes ``text`` to ``rel`` whole: a temporary file in the same folder, then a rename over it.

    No fsync: the vault's durable copy is git's object store (the commit that follows), and a file
    torn by a power cut shows as a change that the next full rebuild rewrites.
    """
    path = check(root, rel)
    parent = PurePosixPath(rel).parent
    if str(parent) != ".":
        ensure_dir(root, str(parent))
    tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            _write_all(fd, text.encode("utf-8"))
        finally:
            os.close(fd)  # an error here (NFS reports a full disk at close) still fails the write
        os.replace(tmp, path)  # replaces a name, never follows one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def rename(root: Path, old: str, new: str) -> None:
    """Moves a file git does not track (a leftover of a cycle that failed before its commit)."""
    src = check(root, old)
    dst = check(root, new)
    ensure_dir(root, str(PurePosixPath(new).parent))
    os.replace(src, dst)


def remove(root: Path, rel: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(check(root, rel))


def list_dir(root: Path, rel: str) -> list[str]:
    """Names in the folder ``rel`` (empty when it does not exist); UnsafePath when it is a symlink."""
    path = check(root, rel)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{rel} is not a directory")
    return sorted(os.listdir(path))


def remove_temp_files(root: Path, rels: list[str]) -> list[str]:
    """Deletes temporary files a crash left in these folders (they must never be committed)."""
    gone: list[str] = []
    for rel in rels:
        try:
            names = list_dir(root, rel)
        except UnsafePath:
            continue
        for name in names:
            if TMP_MARK in name and name.startswith("."):
                remove(root, f"{rel}/{name}")
                gone.append(f"{rel}/{name}")
    return gone
