"""Packing: encrypted blobs collected into pack files and uploaded in the background.

Each worker thread fills its own open pack (its own data key), so encryption runs in
parallel without a shared lock; full packs are uploaded by a small I/O pool.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from lifeboat.crypto.envelope import Cipher
from lifeboat.repo.format import pack_header, pack_name, pack_trailer
from lifeboat.repo.index import PackEntry
from lifeboat.repo.keyring import Keyring
from lifeboat.storage.base import Storage


class _OpenPack:
    def __init__(self, keyring: Keyring) -> None:
        self.cipher: Cipher
        self.cipher, wrapped = keyring.new_pack_cipher()
        self.parts: list[bytes] = [pack_header(wrapped)]
        self.size = len(self.parts[0])
        self.blobs: list[tuple[str, str, int, int, int]] = []

    def add(self, blob_id: str, btype: str, payload: bytes, raw_length: int) -> int:
        envelope = self.cipher.seal(payload, bytes.fromhex(blob_id))
        self.blobs.append((blob_id, btype, self.size, len(envelope), raw_length))
        self.parts.append(envelope)
        self.size += len(envelope)
        return len(envelope)

    def finish(self) -> tuple[str, bytes, PackEntry]:
        self.parts.append(pack_trailer(self.blobs))
        data = b"".join(self.parts)
        pack_id = hashlib.sha256(data).hexdigest()
        return pack_id, data, {"id": pack_id, "blobs": [list(b) for b in self.blobs]}


class Packer:
    """Thread-safe: ``add`` may be called from many threads at once."""

    def __init__(
        self,
        storage: Storage,
        keyring: Keyring,
        pack_size: int,
        on_uploaded: Callable[[PackEntry, int], None],
        max_inflight: int = 4,
    ) -> None:
        self.storage = storage
        self.keyring = keyring
        self.pack_size = pack_size
        self.on_uploaded = on_uploaded
        self._local = threading.local()
        self._open: dict[int, _OpenPack] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(max_inflight)
        self._pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="upload")
        self._futures: list[Future[None]] = []
        self._error: BaseException | None = None

    def add(self, blob_id: str, btype: str, payload: bytes, raw_length: int) -> int:
        self._raise_pending()
        pack: _OpenPack | None = getattr(self._local, "pack", None)
        if pack is None:
            pack = _OpenPack(self.keyring)
            self._local.pack = pack
            with self._lock:
                self._open[threading.get_ident()] = pack
        stored = pack.add(blob_id, btype, payload, raw_length)
        if pack.size >= self.pack_size:
            self._local.pack = None
            with self._lock:
                self._open.pop(threading.get_ident(), None)
            self._submit(pack)
        return stored

    def _submit(self, pack: _OpenPack) -> None:
        self._slots.acquire()
        future = self._pool.submit(self._upload, pack)
        with self._lock:
            self._futures.append(future)

    def _upload(self, pack: _OpenPack) -> None:
        # Finishing (joining and hashing 8 MiB) happens here, not in the thread that filled
        # the pack, so that thread goes back to chunking at once.
        try:
            pack_id, data, entry = pack.finish()
            self.storage.put(pack_name(pack_id), data)
            self.on_uploaded(entry, len(data))
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._slots.release()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Finish every open pack and wait until all packs are stored."""
        with self._lock:
            packs = list(self._open.values())
            self._open.clear()
        self._local.pack = None
        for pack in packs:
            if pack.blobs:
                self._submit(pack)
        # Other threads' thread-local references are stale now; they must not add again.
        self._local = threading.local()
        with self._lock:
            futures, self._futures = self._futures, []
        for future in futures:
            future.result()
        self._raise_pending()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
