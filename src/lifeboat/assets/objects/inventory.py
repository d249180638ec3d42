"""Reading an AWS S3 Inventory report: manifest.json and its gzipped CSV or Parquet files.

The manifest (docs.aws.amazon.com, "Inventory manifest") names the ``fileFormat``, the
``fileSchema`` (for CSV a comma-separated field list such as ``Bucket, Key, VersionId,
IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag``; for Parquet the column names are
snake_case: ``key``, ``version_id``, ``is_latest``, ...), the ``creationTimestamp``
(milliseconds) and ``files[]`` with their ``key`` and ``MD5checksum`` in the destination
bucket. CSV keys are URL-encoded; Parquet keys are not.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lifeboat.assets.objects.s3source import S3Source
from lifeboat.errors import ConfigError, IntegrityError, LifeboatError

FORMATS = ("CSV", "Parquet")


@dataclass
class Row:
    """One object listed in an S3 Inventory report."""

    key: str  # full key in the source bucket
    size: int
    etag: str
    last_modified: datetime
    version_id: str | None = None
    is_latest: bool = True
    is_delete_marker: bool = False


@dataclass
class Inventory:
    """An S3 Inventory report: its manifest and data files."""

    url: str
    bucket: str  # where the report's files are
    source_bucket: str
    file_format: str
    fields: list[str]
    created: datetime
    files: list[dict[str, Any]] = field(default_factory=list)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.strip()).lower()


REPORT_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z/$")


def newest_manifest(source: S3Source, url: str) -> str:
    """``s3://dest/prefix/source-bucket/config-id/`` names a report configuration: its newest
    dated report (YYYY-MM-DDTHH-MMZ/) with a manifest.json, the one a schedule wants."""
    parsed = urllib.parse.urlparse(url)
    prefix = parsed.path.lstrip("/")
    prefix += "" if not prefix or prefix.endswith("/") else "/"
    dated = sorted(
        (p for p in source.prefixes_of(parsed.netloc, prefix) if REPORT_DATE.search(p)), reverse=True
    )
    for report in dated:
        if source.exists_in(parsed.netloc, f"{report}manifest.json"):
            return f"s3://{parsed.netloc}/{report}manifest.json"
    raise ConfigError(
        f"no S3 Inventory report under {url}",
        hint="give the report configuration's prefix (.../SOURCE-BUCKET/CONFIG-ID/) or a manifest.json",
    )


def read_manifest(source: S3Source, url: str) -> Inventory:
    """Read an inventory's manifest.json (the newest under a prefix, or the one named)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "s3":
        raise ConfigError(f"bad inventory {url!r}", hint="give s3://bucket/prefix/.../manifest.json")
    if not parsed.path.endswith("manifest.json"):
        url = newest_manifest(source, url)
        parsed = urllib.parse.urlparse(url)
    raw = source.get_bytes(parsed.netloc, parsed.path.lstrip("/"), "reading the inventory manifest")
    try:
        manifest = json.loads(raw)
        file_format = str(manifest["fileFormat"])
        schema = str(manifest["fileSchema"])
        created = datetime.fromtimestamp(int(manifest["creationTimestamp"]) / 1000, UTC)
        files = [dict(f) for f in manifest["files"]]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{url} is not an S3 Inventory manifest") from None
    if file_format not in FORMATS:
        raise ConfigError(
            f"inventory format {file_format} is not supported", hint="use CSV or Parquet reports"
        )
    if file_format == "CSV":
        fields = [_snake(f) for f in schema.split(",")]
    else:  # the Parquet schema text: "message s3.inventory { required binary key (UTF8); ... }"
        fields = re.findall(r"(?:required|optional)\s+\w+\s+(\w+)", schema)
    if "key" not in fields or "size" not in fields:
        raise ConfigError(f"inventory {url} lists no Key or Size", hint="add Size to the inventory's fields")
    dest = str(manifest.get("destinationBucket", ""))
    bucket = dest.rsplit(":", 1)[-1] if dest else parsed.netloc
    return Inventory(url, bucket, str(manifest.get("sourceBucket", "")), file_format, fields, created, files)


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _row(values: dict[str, Any], csv_encoded: bool) -> Row:
    key = str(values["key"])
    modified = values.get("last_modified_date")
    if isinstance(modified, datetime):
        when = modified if modified.tzinfo else modified.replace(tzinfo=UTC)
    elif modified:
        when = datetime.fromisoformat(str(modified).replace("Z", "+00:00"))
    else:
        when = datetime.fromtimestamp(0, UTC)
    return Row(
        key=urllib.parse.unquote_plus(key) if csv_encoded else key,
        size=int(values.get("size") or 0),
        etag=str(values.get("e_tag") or ""),
        last_modified=when,
        version_id=str(values["version_id"]) if values.get("version_id") else None,
        is_latest=_bool(values["is_latest"]) if "is_latest" in values else True,
        is_delete_marker=_bool(values.get("is_delete_marker", False)),
    )


def read_file(source: S3Source, inventory: Inventory, entry: dict[str, Any]) -> Iterator[Row]:
    """The rows of one report file, after checking its MD5 against the manifest; a file
    that cannot be parsed is an attributed error, never a crash."""
    key = str(entry["key"])
    try:
        yield from _parse_file(source, inventory, key, entry)
    except LifeboatError:
        raise
    except Exception as exc:  # gzip, csv, dates, sizes, pyarrow: whatever the file holds
        raise IntegrityError(
            f"inventory file {key} cannot be read: {type(exc).__name__}: {str(exc)[:200]}",
            hint="plan without --inventory (delimiter listings), or use a complete inventory report",
        ) from None


def _parse_file(source: S3Source, inventory: Inventory, key: str, entry: dict[str, Any]) -> Iterator[Row]:
    data = source.get_bytes(inventory.bucket, key, "reading the inventory")
    expected = entry.get("MD5checksum")
    if expected and hashlib.md5(data, usedforsecurity=False).hexdigest() != expected:
        raise IntegrityError(f"inventory file {key} does not match its MD5 in the manifest")
    if inventory.file_format == "CSV":
        text = io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(data)), encoding="utf-8", newline="")
        for record in csv.reader(text):
            yield _row(dict(zip(inventory.fields, record, strict=False)), csv_encoded=True)
        return
    try:
        import pyarrow.parquet as pq  # only for Parquet reports
    except ImportError:
        raise ConfigError(
            "reading a Parquet inventory report needs pyarrow",
            hint="pip install 'lifeboat[inventory]', or configure the inventory report as CSV",
        ) from None

    table = pq.read_table(io.BytesIO(data))
    for values in table.to_pylist():
        yield _row(values, csv_encoded=False)


def live_rows(rows: Iterator[Row], prefix: str) -> Iterator[Row]:
    """The current version of each key under ``prefix`` (keys made relative to it):
    noncurrent versions and keys whose latest version is a delete marker are skipped."""
    for row in rows:
        if row.key.startswith(prefix) and row.is_latest and not row.is_delete_marker:
            row.key = row.key[len(prefix) :]
            yield row
