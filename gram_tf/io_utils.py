"""Small file helpers: every artifact is written to a temp file and renamed, never half-written."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import GramTFError


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temp path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp creates 0600; give the artifact the usual permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def require_dir(path, what: str = "--out") -> Path:
    """`path` as a folder to write into: a one-line error when it (or a parent) is an existing file."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise GramTFError(f"{p} is a file, not a folder; pass a folder for {what}")
            break
    return path


LOCK_NAME = ".gram_tf.lock"


@contextlib.contextmanager
def folder_lock(folder, what: str = "this folder", wait: float = 0):
    """Hold `folder` for one writer: a second process gets a one-line error naming the holder (pid, host,
    start time), after waiting up to `wait` seconds for it to let go. A lock whose process is gone (killed,
    rebooted) is stale and taken over; one held on another host (a shared file system) counts as held,
    since its process cannot be checked from here."""
    import datetime
    import socket
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    host = socket.gethostname()
    me = {"pid": os.getpid(), "host": host, "started": datetime.datetime.now().isoformat(timespec="seconds")}
    deadline = time.monotonic() + wait
    stale = 0
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            pid = int(holder.get("pid", -1))
            there = holder.get("host", host)
            if pid > 0 and (there != host or (pid != os.getpid() and _alive(pid))):
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise GramTFError(f"{folder} is being written by process {pid}"
                                  f"{'' if there == host else ' on ' + str(there)} (since {holder.get('started')}, "
                                  f"{what}); wait for it, or remove {lock} if that process is gone") from None
            stale += 1
            if stale > 2:  # pragma: no cover - two takers raced for a stale lock
                raise GramTFError(f"{folder}: could not take {lock}; run the command again")
            lock.unlink(missing_ok=True)  # stale (or ours from a crash in this process): take it over
            time.sleep(0.01)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def atomic_write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path):
    return json.loads(Path(path).read_text())


def sha256_file(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def compressed_sizes(path) -> dict:
    """gzip and zip sizes (deflate level 9): the study measured pruning gains by zip size.

    Both containers hold the same raw deflate stream, so it is computed once and the fixed
    container overheads are added: gzip 10-byte header + 8-byte trailer (no file name, as
    gzip.compress writes it); zip local header (30 + name) + central directory entry (46 + name)
    + end record (22), as zipfile writes a single deflated member without extra fields.
    """
    import zlib

    path = Path(path)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    size = deflated = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            size += len(block)
            deflated += len(comp.compress(block))
    deflated += len(comp.flush())
    name = len(path.name.encode())
    return {"size_bytes": size, "gzip_bytes": deflated + 18, "zip_bytes": deflated + 30 + 46 + 2 * name + 22}


def require_regular_file(path, what: str = "model file") -> int:
    """`path`'s size, after checking it is a regular file (a symlink to one is fine). Checked with
    stat before anything opens it: opening a named pipe blocks until a writer comes, and a device
    (/dev/zero) never ends, so neither may reach a reader."""
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GramTFError(f"{path}: {what} not found; check the path") from None
    except OSError as exc:
        raise GramTFError(f"{path}: cannot read {what} ({exc.strerror}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise GramTFError(f"{path}: is a folder, not a {what}; pass the file itself")
    if not stat.S_ISREG(st.st_mode):
        raise GramTFError(f"{path}: not a regular file (a pipe, socket or device); pass a {what} on disk")
    return st.st_size


def read_capped(path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (one-line error otherwise)."""
    size = require_regular_file(path, what)
    if size > limit:
        raise GramTFError(f"{path}: {size:,} bytes is more than a {what} can be ({limit:,} bytes); check the path")
    try:
        with open(path, "rb") as fh:
            return fh.read(limit + 1)[:limit]
    except OSError as exc:
        raise GramTFError(f"{path}: cannot read {what} ({exc.strerror})") from None
