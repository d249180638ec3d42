"""A bucket listing that would never end is refused (pure logic: the store's answers are
stand-ins; the page loop is what is tested)."""

from __future__ import annotations

from typing import Any

import pytest

from lifeboat.assets.objects.backup import listed
from lifeboat.assets.objects.s3source import S3Source
from lifeboat.assets.objects.transfer import Counters
from lifeboat.errors import StorageError
from lifeboat.progress import NO_PROGRESS


def looping_source(monkeypatch: pytest.MonkeyPatch) -> tuple[S3Source, list[Any]]:
    """A source whose store answers every page with the same continuation token."""
    source = S3Source("s3://media/", endpoint_url="http://127.0.0.1:9", region="us-east-1")
    asked: list[Any] = []

    def list_objects_v2(**args: Any) -> dict[str, Any]:
        asked.append(args.get("ContinuationToken"))
        assert len(asked) < 10, "the listing never ends"
        contents = [{"Key": "a.jpg", "Size": 1, "ETag": '"e"', "LastModified": "2026-12-04T08:00:00Z"}]
        return {"Contents": contents, "IsTruncated": True, "NextContinuationToken": "same-token"}

    monkeypatch.setattr(source.client, "list_objects_v2", list_objects_v2)
    return source, asked


def test_a_repeated_continuation_token_ends_a_backups_listing_with_one_error(monkeypatch):
    source, asked = looping_source(monkeypatch)
    counters = Counters()
    with pytest.raises(StorageError, match="same listing page twice") as refused:
        for _ in listed(source, counters, NO_PROGRESS):
            pass
    assert asked == [None, "same-token"]
    assert counters.objects == 1  # the first page, once
    assert "\n" not in str(refused.value)


def test_a_repeated_continuation_token_ends_a_whole_listing(monkeypatch):
    source, asked = looping_source(monkeypatch)
    with pytest.raises(StorageError, match="same listing page twice"):
        source.list_current()
    assert asked == [None, "same-token"]
