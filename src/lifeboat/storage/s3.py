"""S3-compatible storage: put-if-absent with If-None-Match, Object Lock retention.

On a versioned bucket (every Object Lock bucket is one) the first version written under a
name is the object: ``If-None-Match: *`` is only a courtesy of well-behaved clients, so a
holder of the same credentials can still write a new version or a delete marker. Reads pin
the first version (its id comes from our own PUT, or from ListObjectVersions of the name's
directory, cached), listings list versions, and ``tampering()`` names what was added on top.
Locks (``locks/``) are short-lived and deletable, so they are read as plain latest objects.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from lifeboat.errors import AlreadyExistsError, ConfigError, LockedError, NotFoundError, StorageError
from lifeboat.s3errors import S3Failure, classify
from lifeboat.s3times import parse_times_in_c
from lifeboat.storage.base import ObjectStat, Tampering, retention_slack
from lifeboat.storage.credentials import s3_client

DEFAULT_STALL_TIMEOUT = 60.0
# Attempts per request, botocore's own retries and ours for a body that stops midway alike.
# A request to an endpoint that stops answering fails after about ATTEMPTS x (stall_timeout
# + 1 s: botocore waits up to a second for "100 Continue" before a PUT's body) plus at most
# 7 s of backoff; every later request on the same storage then fails at once.
ATTEMPTS = 4
STALLS = (ReadTimeoutError, ConnectTimeoutError)
# the store's answers to a body that does not match the checksum the request carried (S3's,
# and MinIO's for the x-amz-checksum-* headers)
CHECKSUM_REFUSALS = frozenset({"BadDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch"})
SHA256_HEADER = "x-amz-checksum-sha256"
# a body that ends or stops midway: botocore's retries only cover the request and headers
BODY_ERRORS = (ReadTimeoutError, ResponseStreamingError, IncompleteReadError, ConnectionClosedError)


def client_config(stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> Config:
    """Socket timeouts are the stall detector: no byte sent or received for
    ``stall_timeout`` seconds (connecting, sending, waiting for the answer, or midway
    through a body) aborts the attempt."""
    return Config(
        max_pool_connections=32,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
        connect_timeout=stall_timeout,
        read_timeout=stall_timeout,
    )


CLIENT_CONFIG = client_config()
# names read as plain latest objects, never pinned: repository locks are deleted on release
UNPINNED = ("locks/",)
PROBE_BODY = b"lifeboat endpoint probe"
PROBE_PREFIX = "locks/probe-"
PROBE_LOCK = timedelta(minutes=10)
# names later snapshots reuse: locked a slack longer at write (repo/immutability.py)
SLACKED = ("data/", "index/")


@dataclass(frozen=True)
class _Version:
    version_id: str
    size: int
    mtime: float


def _unsigned_payload_over_tls(request: Any, **_: Any) -> None:
    """A PUT over TLS that carries its SHA-256 as x-amz-checksum-sha256 (a pack) is signed
    without hashing its body again: the store checks the body against that signed header.
    botocore leaves the body unsigned only when the checksum is one it added itself (its
    CRC32); told about ours here, it does the same, and hashing 8 MiB for the signature
    cost more than the CRC32 it replaced. Over plain HTTP botocore signs every body."""
    if request.url.startswith("https://") and SHA256_HEADER in request.headers:
        algorithm = {"in": "header", "name": SHA256_HEADER, "algorithm": "sha256"}
        request.context.setdefault("checksum", {})["request_algorithm"] = algorithm


class S3Storage:
    """Objects under ``s3://bucket/prefix``. Credentials come from the usual AWS chain."""

    # LastModified is set by the store, not by the writer (storage/base.py)
    write_times_trusted = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        lock_days: int | None = None,
        client: Any = None,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        trust_endpoint: bool = False,
    ) -> None:
        self.bucket = bucket
        # skip the endpoint probe (probe()): for endpoints known not to enforce Object Lock
        # semantics, such as moto in tests; documented as unsafe
        self.trust_endpoint = trust_endpoint
        self.prefix = prefix.strip("/")
        self.lock_days = lock_days
        self.endpoint_url = endpoint_url
        self.stall_timeout = stall_timeout
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        if client is None:
            session = boto3.session.Session()
            parse_times_in_c(session)
            client = s3_client(session, endpoint_url, region_name=region, config=client_config(stall_timeout))
        self._client = client
        # botocore's own checksum setting (AWS_REQUEST_CHECKSUM_CALCULATION): a store that
        # refuses x-amz-checksum-* headers is used with "when_required", and gets none of ours
        self._checksums = client.meta.config.request_checksum_calculation == "when_supported"
        client.meta.events.register(
            "before-sign.s3.PutObject", _unsigned_payload_over_tls, unique_id="lifeboat-sha256-put"
        )
        self._lock_checked = False
        self._versioned: bool | None = None
        # key -> its first version; filled by our PUTs and by version listings
        self._pins: dict[str, _Version] = {}
        self._retention: dict[str, float] = {}  # key -> known retain-until (epoch seconds)
        self._pins_lock = threading.Lock()
        self.retention_requests = 0
        # Set once a request stalled through all its attempts: the endpoint is not answering,
        # so later requests (the aborted backup's index, the lock release, the audit mirror)
        # fail at once instead of each waiting out its own attempts.
        self._stalled: StorageError | None = None
        self._stall_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The endpoint as host:port, for messages (the client resolves AWS's own)."""
        url = str(getattr(self._client.meta, "endpoint_url", None) or self.endpoint_url or "AWS S3")
        return url.split("://", 1)[-1].rstrip("/")

    def _check_stalled(self) -> None:
        if self._stalled is not None:
            raise StorageError(self._stalled.message, hint=self._stalled.hint)

    def _stall(self, action: str, name: str, exc: Exception) -> NoReturn:
        what = (
            f"no progress for {self.stall_timeout:g}s"
            if isinstance(exc, STALLS)
            else "the connection stalled or closed while sending"
        )
        err = StorageError(
            f"S3 endpoint {self.endpoint} stopped answering {action} {name}: {what} "
            f"in each of {ATTEMPTS} attempts",
            hint="check the endpoint and the network path to it; [repository] stall_timeout "
            "sets how long a transfer may make no progress",
        )
        with self._stall_lock:
            self._stalled = self._stalled or err
        raise err from None

    def _key(self, name: str) -> str:
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"invalid object name {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def _fail(self, exc: Exception, action: str, name: str) -> NoReturn:
        where = self.endpoint_url or "AWS S3"
        if isinstance(exc, (*STALLS, ConnectionClosedError)):
            self._stall(action, name, exc)
        failure = classify(exc)
        if failure is not None:
            raise self._failure_error(failure, action, name, where) from None
        err = StorageError(f"S3 transfer to {self.endpoint} failed {action} {name}: {type(exc).__name__}")
        err.transient = True
        raise err from None

    def _failure_error(self, failure: S3Failure, action: str, name: str, where: str) -> StorageError:
        if failure.reason == "unreachable":
            return StorageError(
                f"cannot reach S3 endpoint {where}", hint="check [repository] endpoint_url and the network"
            )
        if failure.reason == "no-credentials":
            return StorageError(
                "no S3 credentials found",
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile",
            )
        if failure.reason == "not-found":
            return NotFoundError(f"{name} does not exist in the repository")
        if failure.reason == "no-bucket":
            return StorageError(f"bucket {self.bucket} does not exist at {where}")
        if failure.reason == "exists":
            return AlreadyExistsError(f"{name} already exists in the repository")
        if failure.reason == "bad-credentials":
            return StorageError("S3 rejected the credentials", hint="check the AWS credentials in use")
        if failure.code in CHECKSUM_REFUSALS:
            err = StorageError(
                f"{where} refused {name}: the bytes it received do not match their checksum ({failure.code})",
                hint="something between lifeboat and the store changed them (memory, network, "
                "a proxy); run the command again",
            )
            err.transient = True
            return err
        if failure.code == "InvalidArgument" and action == "writing" and self._checksums:
            return StorageError(
                f"S3 error {failure.code} writing {name}",
                hint="if the store refuses x-amz-checksum-* headers (Backblaze B2 does), run "
                "lifeboat with AWS_REQUEST_CHECKSUM_CALCULATION=when_required",
            )
        if failure.reason == "denied" and action == "deleting":
            return LockedError(f"{name} is protected (Object Lock or policy denies deletion)")
        err = StorageError(f"S3 error {failure.code or failure.status or ''} {action} {name}")
        err.transient = failure.status >= 500
        return err

    def check_object_lock(self) -> None:
        """With lock_days, the bucket must have Object Lock enabled."""
        if self._lock_checked or not self.lock_days:
            return
        try:
            conf = self._client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code != "ObjectLockConfigurationNotFoundError":
                self._fail(exc, "checking Object Lock on", self.bucket)
            enabled = False
        except (BotoCoreError, OSError) as exc:
            self._fail(exc, "checking Object Lock on", self.bucket)
        if not enabled:
            raise ConfigError(
                f"bucket {self.bucket} has no Object Lock configuration; lock_days needs it",
                hint="create the bucket with Object Lock enabled, or remove lock_days",
            )
        self._lock_checked = True

    def put(self, name: str, data: bytes, *, retain: bool = True, sha256: str | None = None) -> None:
        """See storage/base.py. With ``sha256`` the PUT carries it as its checksum
        (x-amz-checksum-sha256): the store checks the bytes it received against it and keeps
        it with the object, and botocore computes no CRC32 of its own over the body. Not
        when botocore's checksums are turned off (``request_checksum_calculation``
        "when_required"): a store that refuses the headers is run that way."""
        self._check_stalled()
        key = self._key(name)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data, "IfNoneMatch": "*"}
        if sha256 is not None and self._checksums:
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        until: datetime | None = None
        if retain and self.lock_days:
            self.check_object_lock()
            until = datetime.now(UTC) + timedelta(days=self.lock_days)
            if name.startswith(SLACKED):
                until += retention_slack(self.lock_days)
            args["ObjectLockMode"] = "COMPLIANCE"
            args["ObjectLockRetainUntilDate"] = until
            args["ContentMD5"] = base64.b64encode(hashlib.md5(data).digest()).decode()
        try:
            response = self._client.put_object(**args)
        except (ClientError, BotoCoreError, OSError) as exc:
            self._fail(exc, "writing", name)
        version = response.get("VersionId")
        if version and version != "null" and not self._unpinned(name):
            with self._pins_lock:
                self._pins[key] = _Version(version, len(data), time.time())
                if until is not None:
                    self._retention[key] = until.timestamp()

    # -- versions ------------------------------------------------------------------------

    @staticmethod
    def _unpinned(name: str) -> bool:
        return name.startswith(UNPINNED)

    def versioned(self) -> bool:
        """True when the bucket keeps versions (asked once)."""
        if self._versioned is None:
            self._check_stalled()
            try:
                status = self._client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except (ClientError, BotoCoreError, OSError) as exc:
                self._fail(exc, "checking versioning on", self.bucket)
            self._versioned = status in ("Enabled", "Suspended")
        return self._versioned

    def _scan(self, key_prefix: str, name: str) -> dict[str, tuple[_Version | None, int, int]]:
        """key -> (first version or None, later versions, delete markers) under a key prefix.

        S3 lists the versions of a key newest first, so the last one listed is the first
        written."""
        found: dict[str, tuple[_Version | None, int, int]] = {}
        paginator = self._client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=key_prefix):
                for v in page.get("Versions", []):
                    first, later, markers = found.get(v["Key"], (None, -1, 0))
                    version = _Version(v["VersionId"], int(v["Size"]), v["LastModified"].timestamp())
                    found[v["Key"]] = (version, later + 1, markers)
                for m in page.get("DeleteMarkers", []):
                    first, later, markers = found.get(m["Key"], (None, -1, 0))
                    found[m["Key"]] = (first, later, markers + 1)
        except (ClientError, BotoCoreError, OSError) as exc:
            self._fail(exc, "listing", name)
        with self._pins_lock:
            for key, (first, _, _) in found.items():
                if first is not None and not self._unpinned(self._name(key)):
                    self._pins.setdefault(key, first)
        return found

    def _name(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def _pin(self, name: str) -> _Version | None:
        """The first version of ``name``, or None when it never existed (or was purged)."""
        key = self._key(name)
        pin = self._pins.get(key)
        if pin is not None:
            return pin
        # one listing per directory: a restore reading many packs of data/ab/ pays once
        scope = key.rsplit("/", 1)[0] + "/" if "/" in name else key
        self._scan(scope, name)
        return self._pins.get(key)

    def _version_args(self, name: str) -> dict[str, Any]:
        """Bucket, key, and the pinned VersionId on a versioned bucket; NotFoundError when
        the name has no version at all."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(name)}
        if self._unpinned(name) or not self.versioned():
            return args
        pin = self._pin(name)
        if pin is None:
            raise NotFoundError(f"{name} does not exist in the repository")
        args["VersionId"] = pin.version_id
        return args

    def tampering(self, prefix: str = "") -> list[Tampering]:
        if not self.versioned():
            return []
        base = f"{self.prefix}/" if self.prefix else ""
        found = self._scan(base + prefix, prefix or "/")
        return [
            Tampering(self._name(key), max(later, 0), markers)
            for key, (first, later, markers) in sorted(found.items())
            if not self._unpinned(self._name(key)) and (later > 0 or markers > 0 or first is None)
        ]

    # -- endpoint probe ---------------------------------------------------------------------

    def probe(self) -> list[str]:
        """What this endpoint fails to enforce, as sentences (empty: all good).

        Probes live under ``locks/`` (deletable by every role, ignored by lock listings as
        they are not JSON): a second ``If-None-Match: *`` PUT of an existing key must get
        412, and with lock_days a COMPLIANCE-locked version must refuse both a shorter
        retention and deletion."""
        self._sweep_probes()
        failures: list[str] = []
        name = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
        # with its SHA-256 as a pack is put: a store that refuses the header says so at init
        self.put(name, PROBE_BODY, retain=False, sha256=hashlib.sha256(PROBE_BODY).hexdigest())
        try:
            self.put(name, PROBE_BODY + b" again", retain=False)
            failures.append(
                "a second PUT with If-None-Match: * of an existing key was accepted (expected 412)"
            )
        except AlreadyExistsError:
            pass
        finally:
            self._quietly(self.delete, name)
        if self.lock_days:
            failures += self._probe_lock(f"{name}-locked")
        return failures

    def _sweep_probes(self) -> None:
        """Remove earlier probes whose lock has passed (each check leaves one locked probe)."""
        cutoff = time.time() - PROBE_LOCK.total_seconds() - 60
        for obj in list(self.list(PROBE_PREFIX)):
            if obj.mtime < cutoff:
                self._quietly(self.delete, obj.name)

    def _probe_lock(self, name: str) -> list[str]:
        self.check_object_lock()
        key = self._key(name)
        until = datetime.now(UTC) + PROBE_LOCK
        try:
            version = self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=PROBE_BODY,
                IfNoneMatch="*",
                ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=until,
                ContentMD5=base64.b64encode(hashlib.md5(PROBE_BODY).digest()).decode(),
            ).get("VersionId")
        except (ClientError, BotoCoreError, OSError) as exc:
            self._fail(exc, "probing Object Lock with", name)
        failures = []
        shorter = {"Mode": "COMPLIANCE", "RetainUntilDate": until - PROBE_LOCK / 2}
        if self._accepted(self._client.put_object_retention, Key=key, VersionId=version, Retention=shorter):
            failures.append("the retention of a COMPLIANCE-locked version could be shortened")
        if self._accepted(self._client.delete_object, Key=key, VersionId=version):
            failures.append("a COMPLIANCE-locked version could be deleted")
        return failures

    def _accepted(self, call: Any, **args: Any) -> bool:
        try:
            call(Bucket=self.bucket, **args)
            return True
        except ClientError:
            return False
        except (BotoCoreError, OSError) as exc:
            self._fail(exc, "probing", args.get("Key", ""))

    @staticmethod
    def _quietly(call: Any, *args: Any) -> None:
        try:
            call(*args)
        except StorageError:
            pass

    # -- retention ------------------------------------------------------------------------

    def retention(self, name: str, *, fresh: bool = False) -> float | None:
        key = self._key(name)
        known = None if fresh else self._retention.get(key)
        if known is not None:
            return known
        until = self.stat(name).locked_until
        if until is not None:
            with self._pins_lock:
                self._retention[key] = until
        return until

    def extend_retention(self, name: str, until: float) -> None:
        """PutObjectRetention on the pinned version; COMPLIANCE only ever grows."""
        current = self.retention(name)
        if current is not None and current >= until:
            return
        self._check_stalled()
        args = self._version_args(name)
        args["Retention"] = {"Mode": "COMPLIANCE", "RetainUntilDate": datetime.fromtimestamp(until, UTC)}
        try:
            self._client.put_object_retention(**args)
        except (ClientError, BotoCoreError, OSError) as exc:
            self._fail(exc, "extending the retention of", name)
        with self._pins_lock:
            self.retention_requests += 1
            self._retention[args["Key"]] = until

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        args = self._version_args(name)
        if length is not None:
            if length == 0:
                return b""
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        elif offset:
            args["Range"] = f"bytes={offset}-"
        for attempt in range(1, ATTEMPTS + 1):
            self._check_stalled()
            try:
                response = self._client.get_object(**args)
            except (ClientError, BotoCoreError, OSError) as exc:
                self._fail(exc, "reading", name)
            try:
                body: bytes = response["Body"].read()
                return body
            except BODY_ERRORS as exc:
                if attempt == ATTEMPTS:
                    self._fail(exc, "reading", name)
                time.sleep(min(2 ** (attempt - 1), 8) * 0.5)
            except (BotoCoreError, OSError) as exc:
                self._fail(exc, "reading", name)
        raise AssertionError("unreachable")

    def stat(self, name: str) -> ObjectStat:
        self._check_stalled()
        try:
            head = self._client.head_object(**self._version_args(name))
        except (ClientError, BotoCoreError, OSError) as exc:
            self._fail(exc, "reading", name)
        until = head.get("ObjectLockRetainUntilDate")
        return ObjectStat(
            name,
            int(head["ContentLength"]),
            head["LastModified"].timestamp(),
            until.timestamp() if until else None,
        )

    def exists(self, name: str) -> bool:
        try:
            self.stat(name)
            return True
        except NotFoundError:
            return False

    def list(self, prefix: str = "") -> Iterator[ObjectStat]:
        self._check_stalled()
        base = f"{self.prefix}/" if self.prefix else ""
        if not self._unpinned(prefix) and self.versioned():
            for key, (first, _, _) in self._scan(base + prefix, prefix or "/").items():
                if first is not None and not self._unpinned(self._name(key)):
                    yield ObjectStat(key[len(base) :], first.size, first.mtime)
            for unpinned in UNPINNED:
                if unpinned.startswith(prefix):
                    yield from self.list(unpinned)
            return
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for obj in page.get("Contents", []):
                    yield ObjectStat(
                        obj["Key"][len(base) :], int(obj["Size"]), obj["LastModified"].timestamp()
                    )
        except (ClientError, BotoCoreError, OSError) as exc:
            self._fail(exc, "listing", prefix or "/")

    def delete(self, name: str) -> None:
        """Remove every version of the object, so prune really reclaims space."""
        self._check_stalled()
        key = self._key(name)
        try:
            listing = self._client.list_object_versions(Bucket=self.bucket, Prefix=key)
            versions = [
                v["VersionId"]
                for group in ("Versions", "DeleteMarkers")
                for v in listing.get(group, [])
                if v["Key"] == key
            ]
            # none: already gone (a second consolidation of the same index file). A plain
            # DELETE would leave a delete marker in a versioned bucket, which `check` reports
            # as tampering for ever; an unversioned bucket gets one all the same (a store
            # whose version listing lags or omits "null" versions keeps nothing)
            if not versions and not self.versioned():
                self._client.delete_object(Bucket=self.bucket, Key=key)
            for version in versions:
                self._client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
            with self._pins_lock:
                self._pins.pop(key, None)
                self._retention.pop(key, None)
        except (ClientError, BotoCoreError, OSError) as exc:
            self._fail(exc, "deleting", name)

    def sweep_incomplete(self, older_than: float) -> int:
        """Nothing to sweep: every put is one PUT, which S3 applies whole or not at all."""
        return 0

    def close(self) -> None:
        self._client.close()
