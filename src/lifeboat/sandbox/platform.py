"""Lay out a sandbox directory: sources, a policy for them, an initialised repository."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from lifeboat.policy import load_policy
from lifeboat.repo import Repository
from lifeboat.runtime import cache_dir, storage_for

POLICY_TEMPLATE = """\
# Written by `lifeboat demo`: a sandbox platform on this machine.
[repository]
url = "file://{root}/repository"
keyfile = "keys/backup.key"
recovery_key = "keys/recovery.key"

[deployment]
mode = "development"

[classes.standard]
rpo = "1d"
rto = "1h"
retention = {{ last = 3, daily = 7, weekly = 4, monthly = 6 }}

[assets.config]
kind = "files"
class = "standard"
paths = ["{root}/platform/etc"]
"""


@dataclass(frozen=True)
class Sandbox:
    root: Path
    policy_path: Path
    source: Path
    restore_dir: Path


def create_sandbox(root: Path) -> Sandbox:
    """A fresh sandbox under ``root`` (anything there from an earlier demo is replaced)."""
    root = root.resolve()
    if root.exists():
        shutil.rmtree(root)
    (root / "keys").mkdir(parents=True)
    source = root / "platform" / "etc"
    source.mkdir(parents=True)
    policy_path = root / "lifeboat.toml"
    policy_path.write_text(POLICY_TEMPLATE.format(root=root))
    policy = load_policy(policy_path)
    _, backup_key, recovery = Repository.create(storage_for(policy), cache_dir=cache_dir(policy))
    backup_key.save(Path(policy.repository.keyfile))
    assert policy.repository.recovery_key is not None  # the template sets it
    recovery.save(policy.repository.recovery_key)
    return Sandbox(root, policy_path, source, root / "restored" / "etc")
