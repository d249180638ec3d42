"""S3 timestamps parsed by the standard library are the instants botocore's own parser
gives (pure logic): a listing's last-modified times feed every entry's mtime and meta."""

from __future__ import annotations

from datetime import datetime

import pytest
from botocore.utils import parse_timestamp

from lifeboat.s3times import listed_time


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-04T08:23:48.000Z",  # S3's listings
        "2026-12-04T08:23:48Z",
        "2026-12-04T08:23:48.123456Z",
        "2026-12-04T10:23:48+02:00",
        "Fri, 04 Dec 2026 08:23:48 GMT",  # a Last-Modified header: left to botocore
        "2026-12-04T08:23:48",  # no zone: botocore's reading of it (a naive time)
        "1796372628",  # epoch seconds
    ],
)
def test_a_timestamp_is_the_instant_botocore_reads(value: str) -> None:
    ours, theirs = listed_time(value), parse_timestamp(value)
    assert isinstance(ours, datetime)
    assert (ours.tzinfo is None) == (theirs.tzinfo is None)
    assert ours == theirs
    assert ours.timestamp() == theirs.timestamp()


def test_a_listing_time_is_kept_with_the_same_text() -> None:
    """Entries keep ``last_modified.isoformat()``: the same text as before the change."""
    value = "2026-12-04T08:23:48.000Z"
    assert listed_time(value).isoformat() == parse_timestamp(value).isoformat()


def test_garbage_is_refused_as_botocore_refuses_it() -> None:
    with pytest.raises(ValueError):
        listed_time("not a time")


def test_a_repository_on_s3_lists_the_times_botocore_reads(seaweed, make_seaweed_bucket) -> None:
    """The repository's own client parses listing times in C (retention and `check` compare
    them): each listed time is the store's LastModified as boto3's own client reads it."""
    import boto3

    from lifeboat.storage import open_storage

    bucket = make_seaweed_bucket(object_lock=False)
    storage = open_storage(f"s3://{bucket}/repo", endpoint_url=seaweed.endpoint)
    try:
        for n in range(3):
            storage.put(f"data/{n:064x}", b"x" * (n + 1))
        listed = {o.name: o.mtime for o in storage.list("data/")}
    finally:
        storage.close()
    plain = boto3.client("s3", endpoint_url=seaweed.endpoint)
    expected = {
        o["Key"].removeprefix("repo/"): o["LastModified"].timestamp()
        for page in plain.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for o in page.get("Versions", [])
    }
    assert listed == expected and len(listed) == 3
