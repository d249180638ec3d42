"""A local user on the recovery host, and an insider with the state dir, against the key a
keys restore hands its writer processes.

A keys restore gives each writer process the repository's fingerprint key (the MAC key,
lifeboat/filewriters.py) so that it fingerprints the files it reads back. That key
authenticates headers, refs and index files: it must stay inside the restore's own
processes. The attacker reads what any user may read of a running process (its command
line; its environment as the same user), and afterwards every file the restore left: the
state dir, the audit log, the restored tree, the repository. The key appears in none of
them, raw or in hex, while a writer process was caught running with it. Real processes,
a real repository and files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lifeboat import filewriters
from lifeboat.assets.kind import RestoreRequest
from lifeboat.assets.registry import load_policy
from lifeboat.crypto.credentials import Credentials
from lifeboat.services.restore import restore
from tests.keys.test_keys_read_back import FILES, site


def test_the_fingerprint_key_never_leaves_the_restores_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = site(tmp_path)
    seen: list[tuple[bytes, bytes, bytes]] = []  # (key sent, command line, environment)
    send = filewriters.FileWriter.send

    def watched(self: filewriters.FileWriter, specs: list[Any], *args: Any, **kw: Any) -> None:
        send(self, specs, *args, **kw)  # the key is in the writer now
        pid = self._child.pid
        seen.append(
            (
                kw["fingerprint_key"],
                Path(f"/proc/{pid}/cmdline").read_bytes(),
                Path(f"/proc/{pid}/environ").read_bytes(),
            )
        )

    monkeypatch.setattr(filewriters.FileWriter, "send", watched)
    shares = [env.root / "shares" / f"{n}.share" for n in ("alice", "bob")]
    request = RestoreRequest("platform-keys", str(tmp_path / "restored"))

    outcome = restore(load_policy(env.policy), Credentials(shares=shares), request)

    assert outcome.result.ok and len(outcome.result.details["keys"]) == FILES
    assert seen, "no writer process was sent a batch"
    key = seen[0][0]
    assert len(key) == 32 and all(k == key for k, _, _ in seen)
    forms = [key, key.hex().encode(), key.hex().upper().encode()]
    for _, cmdline, environ in seen:
        assert not any(form in cmdline or form in environ for form in forms)
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(left) > FILES  # the restored tree, the state dir, the audit log, the repository
    assert [p for p in left if any(form in p.read_bytes() for form in forms)] == []
