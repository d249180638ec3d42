"""A `dir://` objects asset named `media` on a new file:// repository, for the tests of
directory sources and targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.harness import LifeboatCli, PolicyBuilder


@dataclass(frozen=True)
class DirMedia:
    lb: LifeboatCli
    policy: Path
    recovery: str  # the recovery key's path, for restores


def dir_media(tmp_path: Path, source: Path) -> DirMedia:
    """The asset over ``source`` (made when missing), its repository initialised."""
    source.mkdir(parents=True, exist_ok=True)
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .data_class("standard", rpo="1d", rto="1h")
        .objects("media", f"dir://{source}")
        .write(tmp_path / "lifeboat.toml")
    )
    lb = LifeboatCli(policy)
    recovery = str(tmp_path / "recovery.key")
    lb.run("init", "--recovery-key-out", recovery)
    return DirMedia(lb, policy, recovery)


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
