"""What each source held when a drill's outage is declared, read through its kind before
anything is restored. The RPO measures themselves live with the kinds (assets/rpo.py
holds what they share)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from lifeboat.assets.registry import kind_of
from lifeboat.assets.rpo import Rpo, Unavailable
from lifeboat.errors import LifeboatError

if TYPE_CHECKING:
    from lifeboat.assets.kind import AssetSpec

__all__ = ["Rpo", "Unavailable", "capture_source"]


def capture_source(asset: AssetSpec, at: datetime | None) -> object:
    """The source's state at the reference time, read by the asset's kind before anything
    is restored (a kind's own record, or Unavailable)."""
    try:
        return kind_of(asset).capture_source(asset, at)
    except LifeboatError as exc:
        return Unavailable(f"the source could not be read: {exc.message}")
    except OSError as exc:
        return Unavailable(f"the source could not be read: {exc.strerror}")
