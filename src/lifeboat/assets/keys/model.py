"""The policy table of a `keys` asset: the key files to capture (restored only with the
escrow threshold)."""

from __future__ import annotations

from typing import Literal

from lifeboat.assets.files.model import PathsAsset


class KeysAsset(PathsAsset):
    """`kind = "keys"`: key material; reports show fingerprints, never contents."""

    kind: Literal["keys"]


MODEL = KeysAsset
