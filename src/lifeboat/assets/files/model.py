"""The policy table of a `files` asset: which paths to capture and what to leave out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal, Self

from pydantic import Field

from lifeboat.policy import AssetBase


class PathsAsset(AssetBase):
    """An asset captured from paths on this host (files, and key material in `keys`)."""

    paths: list[Path] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)

    def with_paths_resolved(self, resolve: Callable[[Path], Path]) -> Self:
        """The paths made absolute against the policy file's directory."""
        return self.model_copy(update={"paths": [resolve(p) for p in self.paths]})

    def local_paths(self) -> list[tuple[Path, str]]:
        """Every path to capture must exist."""
        return [(Path(p), f"path {p} does not exist") for p in self.paths]


class FilesAsset(PathsAsset):
    """`kind = "files"`: directories and files, captured with modes, times and owners."""

    kind: Literal["files"]


MODEL = FilesAsset
