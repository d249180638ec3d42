"""Where media objects live: an S3-compatible bucket/prefix (s3source.py), or a local
directory (here), and what both describe an object with.

This is the thing being backed up (or restored into), not the repository: a bucket is
reached with its own boto3 client.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import urllib.parse
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, TypeAlias

from lifeboat.assets.objects.info import DEFAULT_STALL_TIMEOUT, ObjectDir, ObjectInfo, object_identity
from lifeboat.assets.objects.keypaths import key_to_path, key_to_relpath, relpath_to_key
from lifeboat.errors import ConfigError, StorageError
from lifeboat.readahead import AheadFile

if TYPE_CHECKING:
    from lifeboat.assets.objects.model import ObjectsAsset
    from lifeboat.assets.objects.s3source import S3Source


def _etag(st: os.stat_result) -> str:
    """A directory file's etag: it changes with the file's content (mtime, inode and ctime:
    a file rewritten in place with its old mtime put back, as VeraCrypt and exiftool -P do,
    keeps the other two, but the kernel moves its ctime; the files kind's identity has it)."""
    return f"{st.st_mtime_ns:x}-{st.st_ino:x}-{st.st_ctime_ns:x}"


def _file_info(key: str, st: os.stat_result) -> ObjectInfo:
    """A file of a ``dir://`` source as an object: its identity changes with its content."""
    return ObjectInfo(key, st.st_size, _etag(st), datetime.fromtimestamp(st.st_mtime, UTC))


class DirFile(NamedTuple):
    """A file found by the walk of a ``dir://`` source: its key, its path and its stat. An
    ``ObjectInfo`` only when one is needed (``info``): an unchanged file needs its key and
    identity alone, and building an object (a datetime, two dicts) per file of the walk was
    a twentieth of an unchanged backup of 100,000 small files."""

    key: str
    path: str
    st: os.stat_result

    @property
    def size(self) -> int:
        """The file's size as the walk saw it."""
        return self.st.st_size

    @property
    def identity(self) -> str:
        """``ObjectInfo.identity`` of this file, without the object."""
        return object_identity(self.key, None, _etag(self.st), self.st.st_size)

    def info(self) -> ObjectInfo:
        """The file as an object, as the walk saw it."""
        return _file_info(self.key, self.st)


def _unreadable(path: str, exc: OSError) -> StorageError:
    return StorageError(
        f"cannot read {path} in the source directory: {exc.strerror or exc}",
        hint="let the user lifeboat runs as read it, or move it out of the source",
    )


def _regular(st: os.stat_result, path: str) -> os.stat_result:
    """``st`` of a regular file; a pipe, a device or a directory put in a walked file's place
    is taken for the file gone (FileNotFoundError: left out, as a deleted one)."""
    if not stat.S_ISREG(st.st_mode):
        raise FileNotFoundError(errno.ENOENT, "no longer a regular file", path)
    return st


class DirSource:
    """A directory with object semantics: relative paths are keys."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.root = Path(urllib.parse.urlparse(url).path)
        self._made: set[str] = set()  # directories known to exist

    def versioning(self) -> str:
        """A directory keeps no versions."""
        return "Unsupported"

    def list_current(self) -> list[ObjectInfo]:
        """Every regular file under the directory, as objects."""
        return [item.info() for item in self.walk_current() if isinstance(item, DirFile)]

    def walk_current(self) -> Iterator[DirFile | ObjectDir]:
        """The directory's files (``DirFile``) and its subdirectories, in walk order of their
        keys (each directory before its content, key segments sorted at every level: the
        order of a streamed tree, repo/parents.py), holding one directory listing per level."""
        if not self.root.is_dir():
            raise ConfigError(f"source directory {self.root} does not exist")
        return self._walk(str(self.root), "")

    def _walk(self, directory: str, key_prefix: str) -> Iterator[DirFile | ObjectDir]:
        # scandir and strings, not os.walk and Paths: a media tree has tens of thousands of
        # files. What is deleted while the walk runs is left out, as a bucket's listing
        # would leave it out; what cannot be read stops the backup with its path named.
        try:
            with os.scandir(directory) as listing:
                children = sorted([(relpath_to_key(e.name), e) for e in listing], key=itemgetter(0))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _unreadable(directory, exc) from None
        for segment, entry in children:
            key = key_prefix + segment
            try:
                if entry.is_dir(follow_symlinks=False):
                    dir_mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                    yield ObjectDir(key, dir_mtime)
                    yield from self._walk(entry.path, key + "/")
                    continue
                if not entry.is_file() or (entry.name.startswith(".") and entry.name.endswith(".lifeboat")):
                    continue
                st = entry.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _unreadable(entry.path, exc) from None
            yield DirFile(key, entry.path, st)

    def path_of(self, obj: ObjectInfo) -> str:
        """The file an object of this directory is."""
        return os.path.join(self.root, key_to_relpath(obj.key))

    def list_versions(self) -> list[ObjectInfo]:
        """A directory's only versions are its current files."""
        return []

    def open_with_info(self, obj: ObjectInfo) -> tuple[BinaryIO, ObjectInfo]:
        """Open a file for reading with its object info as it is now: a file that changed
        since the walk (a log appended to) is described as it is read, not as listed."""
        return self.open_file(obj.key, self.path_of(obj))

    def open_file(self, key: str, path: str) -> tuple[BinaryIO, ObjectInfo]:
        """``open_with_info`` of a walked file (``DirFile``: its path is known)."""
        # unbuffered: a buffered file asks isatty and seeks on opening, two more system
        # calls per file, each a hand-off of the interpreter to the walk (callers read whole
        # blocks, through SizedReads)
        # O_NONBLOCK: a pipe put in its place since the walk is never waited on
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except BlockingIOError:  # a lease another holds (Samba, NFS): wait, as a plain open would
            _regular(os.stat(path), path)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = _regular(os.fstat(fd), path)
            body = open(fd, "rb", buffering=0)  # noqa: SIM115 - the caller's
        except BaseException:
            os.close(fd)
            raise
        return body, _file_info(key, st)

    def info_of_opened(self, key: str, opened: AheadFile) -> ObjectInfo:
        """The object info of a file opened ahead, as it is now (as ``open_with_info``)."""
        return _file_info(key, _regular(os.fstat(opened.fd), key))

    def upload(
        self,
        key: str,
        stream: BinaryIO | io.RawIOBase,
        content_type: str | None,
        metadata: dict[str, str],
        tags: dict[str, str] | None = None,
        *,
        size: int | None = None,
        sha256: str | None = None,
    ) -> str | None:
        """Write the file; returns the SHA-256 of the bytes written."""
        digest = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for block in iter_chunks(stream):
                digest.update(block)
                yield block

        self.write_chunks(key, hashed())
        return digest.hexdigest()

    def write_chunks(self, key: str, chunks: Iterable[bytes]) -> int:
        """Write the file from its chunks; returns the number of bytes written. Through
        the restore's own writer (dirtarget.DirWriter), so that no link in the directory is
        ever followed, whoever calls this."""
        from lifeboat.assets.objects.dirtarget import DirWriter

        writer = DirWriter(self, fresh=False)
        try:
            return writer.write(key, chunks)
        finally:
            writer.close()

    def sha256_of(self, key: str) -> str:
        """The SHA-256 of a file's content."""
        digest = hashlib.sha256()
        with open(self.root / key_to_path(key), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def delete(self, key: str) -> None:
        """Remove a file (an in-place restore's delete markers)."""
        (self.root / key_to_path(key)).unlink(missing_ok=True)

    def ensure_exists(self) -> None:
        """A directory source always exists (a missing one lists empty)."""
        self.root.mkdir(parents=True, exist_ok=True)

    def lifecycle_noncurrent_days(self) -> int | None:
        """A directory has no lifecycle rules."""
        return None

    def enable_versioning(self) -> None:
        """A directory cannot keep versions."""
        raise ConfigError("a directory has no versioning")


Source: TypeAlias = "S3Source | DirSource"


def open_source(
    url: str,
    endpoint_url: str | None = None,
    region: str | None = None,
    workers: int = 16,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    *,
    profile: str | None = None,
    role_arn: str | None = None,
) -> Source:
    """``profile`` / ``role_arn``: the source's own AWS credentials (storage/credentials.py)."""
    if url.startswith("s3://"):
        from lifeboat.assets.objects.s3source import S3Source

        return S3Source(url, endpoint_url, region, workers, stall_timeout, profile, role_arn)
    if url.startswith("dir://"):
        return DirSource(url)
    raise ConfigError(f"unsupported object location {url!r} (use s3://bucket/prefix or dir:///path)")


def source_for(asset: ObjectsAsset, url: str | None = None, *, workers: int | None = None) -> Source:
    """The asset's source, or ``url`` (a restore target), opened with everything the asset
    says about reaching it: endpoint (for s3:// only), region, credentials (profile,
    role_arn), transfer threads and stall timeout. Every command opens its buckets here,
    so none forgets one of them."""
    url = url or asset.source
    return open_source(
        url,
        asset.endpoint_url if url.startswith("s3://") else None,
        asset.region,
        asset.workers if workers is None else workers,
        asset.stall_timeout.total_seconds(),
        profile=asset.profile,
        role_arn=asset.role_arn,
    )


def iter_chunks(stream: BinaryIO | io.RawIOBase, size: int = 1 << 20) -> Iterator[bytes]:
    """Read a (blocking) stream in blocks of at most ``size`` bytes."""
    return iter(lambda: stream.read(size) or b"", b"")
