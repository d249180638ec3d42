"""A local user on the recovery host, and an insider with the state dir, against the key that
fingerprints restored key files.

A keys restore has its writer process (lifeboat/filewriters.py) make small key files and
read them back; the restore fingerprints those read back equal from the bytes it sent. The
fingerprint key is the repository's MAC key, which authenticates headers, refs and index
files: it stays inside the restore process and is never sent to the writer. The attacker
reads what any user may read of a running process (its command line; its environment as
the same user), everything that crosses the pipe to the writer (what a process of that
user could read from the writer's memory), and afterwards every file the restore left: the
state dir, the audit log, the restored tree, the repository. The key appears in none of
them, raw or in hex, while the writer was caught running. Real processes, a real repository
and files."""

from __future__ import annotations

import marshal
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lifeboat import filewriters, runtime
from lifeboat.assets.kind import RestoreRequest
from lifeboat.assets.registry import load_policy
from lifeboat.crypto.credentials import Credentials
from lifeboat.services.restore import restore
from tests.keys.test_keys_read_back import FILES, site


class _RecordedMarshal:
    """The writer's pipe format, keeping a copy of every message the restore sends."""

    sent: ClassVar[list[bytes]] = []

    @classmethod
    def dumps(cls, value: Any) -> bytes:
        payload = marshal.dumps(value)
        cls.sent.append(payload)
        return payload

    loads = staticmethod(marshal.loads)


def test_the_fingerprint_key_never_reaches_the_writer_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = site(tmp_path)
    shares = [env.root / "shares" / f"{n}.share" for n in ("alice", "bob")]
    policy = load_policy(env.policy)
    repo = runtime.open_for_read(policy, Credentials(shares=shares), purpose="test", asset="platform-keys")
    key = repo.keyring._mac_key  # what the attacker hopes to find
    assert repo.keyed_hash(b"x") == fingerprint_under(key, b"x")
    _RecordedMarshal.sent = []
    monkeypatch.setattr(filewriters, "marshal", _RecordedMarshal)
    seen: list[tuple[bytes, bytes]] = []  # (command line, environment) of a writer caught running
    send = filewriters.FileWriter.send

    def watched(self: filewriters.FileWriter, specs: list[Any], *args: Any, **kw: Any) -> None:
        send(self, specs, *args, **kw)
        pid = self._child.pid
        seen.append((Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{pid}/environ").read_bytes()))

    monkeypatch.setattr(filewriters.FileWriter, "send", watched)
    request = RestoreRequest("platform-keys", str(tmp_path / "restored"))

    outcome = restore(policy, Credentials(shares=shares), request)

    assert outcome.result.ok and len(outcome.result.details["keys"]) == FILES
    assert all(k["match"] for k in outcome.result.details["keys"])  # fingerprinted all the same
    assert seen and _RecordedMarshal.sent, "no writer process was sent a batch"
    forms = [key, key.hex().encode(), key.hex().upper().encode()]
    for cmdline, environ in seen:
        assert not any(form in cmdline or form in environ for form in forms)
    assert not any(form in payload for payload in _RecordedMarshal.sent for form in forms)
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(left) > FILES  # the restored tree, the state dir, the audit log, the repository
    assert [p for p in left if any(form in p.read_bytes() for form in forms)] == []


def fingerprint_under(key: bytes, data: bytes) -> str:
    """The keyed hash a holder of ``key`` computes: the attacker's check that it is the key."""
    from lifeboat.crypto.fingerprint import fingerprint_hash

    return fingerprint_hash(key, data)
