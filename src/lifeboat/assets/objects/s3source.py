"""An S3-compatible bucket (and prefix) as an objects source or restore target, through
its own boto3 client. Loaded only for s3:// locations: a dir:// source never imports boto3
(~100 ms of every command that backs up or restores a directory)."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    ReadTimeoutError,
)
from botocore.response import StreamingBody

from lifeboat.assets.objects.info import DEFAULT_STALL_TIMEOUT, ObjectInfo
from lifeboat.assets.objects.signed_requests import Answer, SignedRequests, StoreBusy
from lifeboat.errors import NotFoundError, StorageError
from lifeboat.s3errors import S3Failure, classify
from lifeboat.s3times import parse_times_in_c
from lifeboat.storage.credentials import aws_session, s3_client

if TYPE_CHECKING:
    from lifeboat.assets.objects.native_requests import Fetched, NativeRequests

META = "x-amz-meta-"
# botocore's attempts per modelled request; a request signed by lifeboat (no botocore retries)
# is retried by transfer.with_retries, as many times. A store that stops answering fails a
# request after about CLIENT_ATTEMPTS x stall_timeout, plus backoff.
CLIENT_ATTEMPTS = 6
MULTIPART_READ = 1 << 20  # what a multipart upload reads from a stream at a time
# "classic": with the AWS Common Runtime installed (native_requests.py), boto3 would otherwise
# move large uploads to the runtime's transfer manager on some EC2 instance types
TRANSFER = TransferConfig(
    multipart_threshold=16 << 20,
    multipart_chunksize=16 << 20,
    max_concurrency=4,
    preferred_transfer_client="classic",
)


def source_error(exc: Exception, where: str, what: str) -> StorageError:
    """A one-line LifeboatError for a failed source operation."""
    failure = classify(exc)
    if failure is None:
        err = StorageError(f"{where}: transfer failed {what}: {type(exc).__name__}")
        err.transient = True
        return err
    return failure_error(failure, where, what)


def failure_error(failure: S3Failure, where: str, what: str) -> StorageError:
    """The source's one-line wording of an S3 failure."""
    if failure.reason == "unreachable":
        return StorageError(
            f"cannot reach the object store of {where}", hint="check the asset's endpoint_url"
        )
    if failure.reason == "no-credentials":
        return StorageError(
            f"no S3 credentials found for {where}",
            hint="set the asset's profile or role_arn, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
        )
    if failure.reason == "no-bucket":
        return StorageError(f"bucket of {where} does not exist")
    if failure.reason == "not-found":
        return NotFoundError(f"{what} does not exist in {where}")
    err = StorageError(f"{where}: S3 error {failure.code or failure.status} {what}")
    err.transient = failure.transient
    return err


def put_headers(checksums: dict[str, str], extra: dict[str, Any]) -> dict[str, str]:
    """The headers botocore's put_object would send for these arguments (ContentMD5,
    ChecksumSHA256, ContentType, Tagging and Metadata are the ones a restore uses)."""
    headers = {"Content-MD5": checksums["ContentMD5"], "x-amz-checksum-sha256": checksums["ChecksumSHA256"]}
    if extra.get("ContentType"):
        headers["Content-Type"] = extra["ContentType"]
    if extra.get("Tagging"):
        headers["x-amz-tagging"] = extra["Tagging"]
    headers.update({META + name: value for name, value in extra["Metadata"].items()})
    return headers


def sendable(headers: dict[str, str]) -> bool:
    """Whether the runtime sends these headers as botocore does: names that are HTTP tokens,
    values of printable ASCII that neither start nor end with a space and are not empty.
    The runtime sends other values as UTF-8 (botocore refuses a line break, sends others as
    ISO-8859-1), trims spaces botocore keeps, and refuses other names: those headers go on
    botocore's transport (signed_requests.py)."""
    return all(
        _TOKEN.fullmatch(name) and value.isascii() and value.isprintable() and value.strip(" ") == value != ""
        for name, value in headers.items()
    )


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110's tchar


# objects up to this size are fetched whole through the runtime (native_requests.py), each held
# in memory until it is stored (twice, briefly: the runtime's buffer and ours); larger ones
# stream on botocore's transport, a block at a time. 32 transfer threads hold 16 MiB at most.
NATIVE_MAX = 256 << 10


class StallGuard:
    """A response body whose stall (no byte for stall_timeout) is a one-line StorageError
    naming the store, retried like any dropped transfer."""

    def __init__(self, body: Any, source: S3Source, what: str) -> None:
        self._body = body
        self._source = source
        self._what = what

    def read(self, n: int = -1) -> bytes:
        """Read from the body; a stall past the timeout aborts."""
        try:
            return bytes(self._body.read() if n is None or n < 0 else self._body.read(n))
        except ReadTimeoutError:
            raise self._source.stalled(self._what, retried=False) from None

    def close(self) -> None:
        """Close the wrapped body."""
        self._body.close()


class S3Source:
    """An S3 bucket (and prefix) as an objects source or restore target."""

    def __init__(
        self,
        url: str,
        endpoint_url: str | None,
        region: str | None,
        workers: int = 16,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        profile: str | None = None,
        role_arn: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlparse(url)
        self.url = url
        self.stall_timeout = stall_timeout
        self.bucket = parsed.netloc
        self.prefix = parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        session = (
            aws_session(profile=profile, role_arn=role_arn, region=region, what=f"object source {url}")
            if profile or role_arn
            else boto3.session.Session()
        )
        parse_times_in_c(session)
        self.client: Any = s3_client(
            session,
            endpoint_url,
            region_name=region,
            config=Config(
                # presigned URLs too: botocore signs them with legacy SigV2 otherwise,
                # which S3 no longer accepts in newer regions
                signature_version="s3v4",
                max_pool_connections=max(workers * 2, 10),
                retries={"max_attempts": CLIENT_ATTEMPTS, "mode": "adaptive"},
                # the stall detector: no byte for this long aborts the attempt, whether
                # connecting, waiting for an answer or midway through a body
                connect_timeout=stall_timeout,
                read_timeout=stall_timeout,
            ),
        )
        # GETs and PUTs signed here (signed_requests.py): a modelled call costs about twice
        # the CPU of the request itself. Set up at the first transfer (resolving credentials
        # is for a backup or restore to do, not for every source opened); each kind is
        # switched off for good once the store refuses one (the modelled call takes over)
        self._session = session
        self._signer: SignedRequests | None = None
        self._signer_tried = False
        self._workers = workers
        self._native: NativeRequests | None = None  # native_requests.py: small objects' GETs and PUTs in C
        self._native_tried = False
        self._signer_lock = threading.Lock()
        self._signed_gets = True
        self._signed_puts = True

    @property
    def endpoint(self) -> str:
        """host:port of the store, for messages."""
        url = str(self.client.meta.endpoint_url)
        return url.split("://", 1)[-1].rstrip("/")

    def stalled(self, what: str, *, retried: bool) -> StorageError:
        """``retried``: botocore already spent its attempts, so retrying again would only
        multiply the wait; a request signed by lifeboat or a body has had one attempt."""
        attempts = f" in each of {CLIENT_ATTEMPTS} attempts" if retried else ""
        err = StorageError(
            f"object store {self.endpoint} of {self.url} stopped answering {what}: "
            f"no progress for {self.stall_timeout:g}s{attempts}",
            hint="check the endpoint and the network path to it; the asset's stall_timeout "
            "sets how long a transfer may make no progress",
        )
        err.transient = not retried
        return err

    def _error(self, exc: Exception, what: str, *, retried: bool = True) -> StorageError:
        if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
            return self.stalled(what, retried=retried)
        return source_error(exc, self.url, what)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, what) from None

    def versioning(self) -> str:
        """The bucket's versioning status ('Enabled', 'Suspended' or '')."""
        out = self._call("reading versioning", self.client.get_bucket_versioning, Bucket=self.bucket)
        return str(out.get("Status", "Disabled"))

    def list_current(self) -> list[ObjectInfo]:
        """The current version of every object under the prefix."""
        objects, token = self.list_page(None)
        while token is not None:
            page, token = self.list_page(token)
            objects += page
        return objects

    def list_page(self, token: str | None) -> tuple[list[ObjectInfo], str | None]:
        """One page of the current objects under the prefix, from the continuation token of
        the page before (None: the first); the next page's token (None after the last)."""
        args = {"Bucket": self.bucket, "Prefix": self.prefix}
        if token is not None:
            args["ContinuationToken"] = token
        out = self._call("listing", self.client.list_objects_v2, **args)
        objects = [self._info(o) for o in out.get("Contents", [])]
        following = out.get("NextContinuationToken") if out.get("IsTruncated") else None
        if following is not None and following == token:
            # botocore's paginator refuses this too: the listing would never end
            raise StorageError(
                f"{self.url}: the store answered the same listing page twice (its continuation token repeats)"
            )
        return objects, str(following) if following else None

    def _info(self, o: dict[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            o["Key"][len(self.prefix) :], int(o["Size"]), o["ETag"].strip('"'), o["LastModified"]
        )

    def list_level(self, rel: str) -> tuple[list[ObjectInfo], list[str]]:
        """The objects directly under ``rel`` (a ``/``-terminated key prefix relative to the
        source) and its sub-prefixes: one delimiter listing."""
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + rel, Delimiter="/"):
                objects += [self._info(o) for o in page.get("Contents", [])]
                prefixes += [p["Prefix"][len(self.prefix) :] for p in page.get("CommonPrefixes", [])]
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, "listing") from None
        return objects, prefixes

    def list_tree(self, rel: str, limit: int | None = None) -> tuple[list[ObjectInfo], bool]:
        """Every object under ``rel``, or the first ``limit`` of them; (objects, truncated)."""
        objects: list[ObjectInfo] = []
        paginator = self.client.get_paginator("list_objects_v2")
        config = {"MaxItems": limit + 1} if limit else {}
        try:
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self.prefix + rel, PaginationConfig=config
            ):
                objects += [self._info(o) for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, "listing") from None
        if limit and len(objects) > limit:
            return objects[:limit], True
        return objects, False

    def get_bytes(self, bucket: str, key: str, what: str) -> bytes:
        """A whole small object of any bucket on this endpoint (an inventory report)."""
        response = self._call(what, self.client.get_object, Bucket=bucket, Key=key)
        try:
            return bytes(response["Body"].read())
        except (BotoCoreError, OSError) as exc:
            raise self._error(exc, what) from None

    def prefixes_of(self, bucket: str, prefix: str) -> list[str]:
        """The common prefixes one level below ``prefix`` in any bucket on this endpoint."""
        out: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"
            ):
                out += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, f"listing {bucket}/{prefix}") from None
        return out

    def exists_in(self, bucket: str, key: str) -> bool:
        """Whether a key exists under the prefix."""
        try:
            self._call(f"reading {key}", self.client.head_object, Bucket=bucket, Key=key)
        except NotFoundError:
            return False
        return True

    def list_versions(self) -> list[ObjectInfo]:
        """Every version and delete marker under the prefix."""
        versions = []
        paginator = self.client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for v in page.get("Versions", []):
                    versions.append(
                        ObjectInfo(
                            v["Key"][len(self.prefix) :],
                            int(v["Size"]),
                            v["ETag"].strip('"'),
                            v["LastModified"],
                            v.get("VersionId"),
                        )
                    )
                for d in page.get("DeleteMarkers", []):
                    versions.append(
                        ObjectInfo(
                            d["Key"][len(self.prefix) :],
                            0,
                            "",
                            d["LastModified"],
                            d.get("VersionId"),
                            is_delete_marker=True,
                        )
                    )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._error(exc, "listing versions") from None
        return versions

    def open_with_info(self, obj: ObjectInfo) -> tuple[BinaryIO, ObjectInfo]:
        """One GET gives the body and the metadata (no HEAD); tags only when there are some."""
        args = {"Bucket": self.bucket, "Key": self.prefix + obj.key}
        if obj.version_id and obj.version_id != "null":
            args["VersionId"] = obj.version_id
        what = f"downloading {obj.key}"
        version = args.get("VersionId")
        try:
            fetched = self._native_get(obj, args["Key"], version)
            if fetched is not None:
                return io.BytesIO(fetched.body), self._answered(obj, fetched.headers, args)
            fast = self._signed("gets", what, lambda signer: signer.get(args["Key"], version))
        except StoreBusy:
            fast = None  # botocore's call next, with its backoff
        if fast is not None:
            # botocore's body wrapper: a dropped connection or a short body becomes a
            # BotoCoreError (retried), not a raw urllib3 exception
            length = int(fast.headers.get("content-length", obj.size))
            body: Any = StallGuard(StreamingBody(fast.response.raw, length), self, what)
            return body, self._answered(obj, fast.headers, args)
        response = self._call(what, self.client.get_object, **args)
        info = ObjectInfo(
            obj.key,
            int(response.get("ContentLength", obj.size)),
            str(response.get("ETag", "")).strip('"') or obj.etag,
            response.get("LastModified", obj.last_modified),
            response.get("VersionId"),
            response.get("ContentType"),
            dict(response.get("Metadata", {})),
        )
        guarded: Any = StallGuard(response["Body"], self, what)
        return guarded, self._with_tags(info, args, bool(response.get("TagCount")))

    def _answered(self, obj: ObjectInfo, headers: Any, args: dict[str, str]) -> ObjectInfo:
        """The object as a GET's answer headers describe it (names matched lower-cased).
        Size and ETag of what this GET returned: a sharded run reads objects listed by an
        inventory hours earlier, and records the version it actually read."""
        meta = {k[len(META) :]: v for k, v in headers.items() if k.lower().startswith(META)}
        size = int(headers.get("content-length", obj.size))
        etag = headers.get("etag", "").strip('"') or obj.etag
        version, content_type = headers.get("x-amz-version-id"), headers.get("content-type")
        return self._with_tags(
            ObjectInfo(obj.key, size, etag, obj.last_modified, version, content_type, meta),
            args,
            bool(headers.get("x-amz-tagging-count")),
        )

    def _with_tags(self, info: ObjectInfo, args: dict[str, str], tagged: bool) -> ObjectInfo:
        if tagged:
            try:
                tagging = self.client.get_object_tagging(
                    **{**args, "VersionId": info.version_id} if info.version_id else args
                )
                info.tags = {t["Key"]: t["Value"] for t in tagging.get("TagSet", [])}
            except (ClientError, BotoCoreError):
                pass  # tags are optional: the credentials may not allow reading them
        return info

    def upload(
        self,
        key: str,
        stream: BinaryIO | io.RawIOBase,
        content_type: str | None,
        metadata: dict[str, str],
        tags: dict[str, str] | None = None,
        *,
        size: int | None = None,
        sha256: str | None = None,
    ) -> str | None:
        """Store one object. Returns the SHA-256 of what the store verifiably holds, or None
        when the store cannot say (then the caller reads it back).

        An object below the multipart threshold with a known SHA-256 goes up in one PUT
        with x-amz-checksum-sha256 and Content-MD5: S3 refuses the upload (BadDigest) when
        the bytes differ and echoes the SHA-256. A store that echoes no checksum still
        answers with an ETag, the MD5 of the bytes it stored for a plain single-part PUT;
        when that is the MD5 of the bytes sent, those bytes' SHA-256 is what it holds, with
        no read-back (encrypted buckets return other ETags and are read back). The MD5 is
        sent even to a store that echoes: one that echoes the checksum it was sent without
        checking it (moto does) still refuses a wrong Content-MD5. The known SHA-256 is the
        payload hash the request is signed with: the body is not hashed again for that."""
        extra: dict[str, Any] = {"Metadata": metadata}
        if content_type:
            extra["ContentType"] = content_type
        if tags:
            extra["Tagging"] = urllib.parse.urlencode(tags)
        if sha256 and size is not None and size < TRANSFER.multipart_threshold:
            data = stream.read()
            md5 = hashlib.md5(data, usedforsecurity=False).digest()
            checksums = {
                "ContentMD5": base64.b64encode(md5).decode(),
                "ChecksumSHA256": base64.b64encode(bytes.fromhex(sha256)).decode(),
            }
            headers = put_headers(checksums, extra)
            try:
                signed = self._native_put(self.prefix + key, data, headers, sha256) or self._signed(
                    "puts",
                    f"uploading {key}",
                    lambda signer: signer.put(self.prefix + key, data, headers, sha256),
                )
            except StoreBusy:
                signed = None  # botocore's call next, with its backoff
            if signed is not None:
                etag, echoed = signed.headers.get("etag", ""), signed.headers.get("x-amz-checksum-sha256")
            else:
                response = self._call(
                    f"uploading {key}",
                    self.client.put_object,
                    Bucket=self.bucket,
                    Key=self.prefix + key,
                    Body=data,
                    **checksums,
                    **extra,
                )
                etag, echoed = str(response.get("ETag", "")), response.get("ChecksumSHA256")
            if echoed:
                return base64.b64decode(echoed).hex()
            if etag.strip('"') == md5.hex():
                return hashlib.sha256(data).hexdigest()
            return None
        if isinstance(stream, io.RawIOBase):
            # buffered: read(n) then returns n bytes (a raw view of chunks gives one chunk per
            # read), so the transfer manager sees a large object and uploads it in parts
            # rather than as one PUT held in memory (S3 refuses a PUT > 5 GiB). Not for one
            # PUT: each of 32 threads then held a 1 MiB buffer for its 50 KB object
            stream = io.BufferedReader(stream, MULTIPART_READ)
        self._call(
            f"uploading {key}",
            self.client.upload_fileobj,
            Fileobj=stream,
            Bucket=self.bucket,
            Key=self.prefix + key,
            ExtraArgs=extra,
            Config=TRANSFER,
        )
        return None

    def signer(self) -> SignedRequests | None:
        """The request signer, set up at the first transfer (None: no credentials to sign
        with, or a store botocore does not sign with SigV4; the modelled calls take over)."""
        with self._signer_lock:
            if not self._signer_tried:
                self._signer_tried = True
                try:
                    credentials = self._session.get_credentials()
                    if credentials is not None:
                        self._signer = SignedRequests(self.client, credentials, self.bucket)
                except (BotoCoreError, ClientError, ValueError):
                    pass
        return self._signer

    def native(self) -> NativeRequests | None:
        """The runtime's GETs and PUTs (native_requests.py), set up with the signer at the first small
        object (None: no signer, a proxy, or a runtime that cannot load or start here; the
        runtime is imported only then: when a bucket's objects are read)."""
        signer = self.signer()
        with self._signer_lock:
            if not self._native_tried and signer is not None:
                self._native_tried = True
                self._native = self._start_native(signer)
        return self._native

    def _start_native(self, signer: SignedRequests) -> NativeRequests | None:
        """``NativeRequests`` for this source's client, or None where the runtime does not load
        (a platform without its wheel: botocore's transport serves) or cannot start."""
        try:
            from awscrt.exceptions import AwsCrtError

            from lifeboat.assets.objects.native_requests import NativeRequests
        except ImportError:
            return None
        try:
            return NativeRequests.for_client(
                self.client,
                self._session.get_credentials(),
                signer.url_head,
                signer.region,
                connections=self._workers,
                stall_timeout=self.stall_timeout,
                max_size=NATIVE_MAX,
            )
        except (AwsCrtError, BotoCoreError, ValueError, OSError):  # OSError: a CA bundle it cannot read
            return None

    def _native_get(self, obj: ObjectInfo, key: str, version: str | None) -> Fetched | None:
        """A small object through the runtime; None: ask it with a signed request instead
        (an empty object too: a range of it is refused)."""
        if not self._signed_gets or not 0 < obj.size <= NATIVE_MAX:
            return None
        native = self.native()
        if native is None or not native.enabled:
            return None
        return native.get(SignedRequests.quoted(key, version))

    def _native_put(self, key: str, data: bytes, headers: dict[str, str], sha256: str) -> Answer | None:
        """A small object stored through the runtime; None: send it with a signed request
        instead (headers the runtime would send otherwise than botocore too)."""
        if not self._signed_puts or len(data) > NATIVE_MAX or not sendable(headers):
            return None
        native = self.native()
        if native is None or not native.enabled:
            return None
        answered = native.put(SignedRequests.quoted(key), data, headers, sha256)
        return Answer(200, answered, None) if answered is not None else None

    def _signed(self, kind: str, what: str, send: Callable[[SignedRequests], Answer]) -> Answer | None:
        """One request (``kind`` "gets" or "puts") signed by lifeboat (signed_requests.py).
        None: make the modelled call for it instead, which retries with botocore's backoff
        and rate limiter, follows redirects and raises the store's own error. That is every
        answer but a success, and a connection that failed; a refusal only the SDK gets past
        (a redirect, the store's own auth) also ends this kind of signed request for the run.
        A stall is raised as one (as the modelled call's would be, after its attempts)."""
        enabled = self._signed_gets if kind == "gets" else self._signed_puts
        signer = self.signer() if enabled else None
        if signer is None:
            return None
        try:
            answer = send(signer)
        except (ReadTimeoutError, ConnectTimeoutError) as exc:
            raise self._error(exc, what, retried=False) from None
        except ClientError as exc:  # refreshing expired credentials failed (STS)
            raise self._error(exc, what, retried=False) from None
        except (BotoCoreError, OSError):
            return None  # refused or dropped connection: botocore's attempts, with backoff
        if answer.ok:
            return answer
        answer.response.raw.close()  # an error document: not worth keeping the connection for
        if answer.sdk_only:
            if kind == "gets":
                self._signed_gets = False
            else:
                self._signed_puts = False
        return None

    def sha256_of(self, key: str) -> str:
        """The SHA-256 of an object's content (read through)."""
        digest = hashlib.sha256()
        body = StallGuard(
            self._call(f"verifying {key}", self.client.get_object, Bucket=self.bucket, Key=self.prefix + key)[
                "Body"
            ],
            self,
            f"verifying {key}",
        )
        for block in iter(lambda: body.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()

    def delete(self, key: str) -> None:
        """Without a VersionId: on a versioned bucket this only adds a delete marker."""
        self._call(f"deleting {key}", self.client.delete_object, Bucket=self.bucket, Key=self.prefix + key)

    def ensure_exists(self) -> None:
        """Raise a one-line error when the bucket cannot be reached."""
        self._call("checking the bucket", self.client.head_bucket, Bucket=self.bucket)

    def lifecycle_noncurrent_days(self) -> int | None:
        """The shortest lifecycle expiry of noncurrent versions, if any."""
        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except ClientError:
            return None
        days = [
            r["NoncurrentVersionExpiration"]["NoncurrentDays"]
            for r in rules
            if r.get("Status") == "Enabled" and "NoncurrentVersionExpiration" in r
        ]
        return min(days) if days else None

    def enable_versioning(self) -> None:
        """Turn versioning on (objects inspect --fix)."""
        self._call(
            "enabling versioning",
            self.client.put_bucket_versioning,
            Bucket=self.bucket,
            VersioningConfiguration={"Status": "Enabled"},
        )
