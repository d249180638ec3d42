"""Backups of a bucket GET each object, and restores into one PUT each object, with requests
signed by lifeboat itself (assets/objects/signed_requests.py), not botocore's modelled calls.
SeaweedFS checks SigV4 signatures (moto does not), so these run against it: the store serves
and takes awkward keys and exact versions with their metadata, content type and tags,
refuses a wrong secret with one line, and metadata with a line break injects no header."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import replace

import boto3
import botocore.auth
import pytest
from bench.seaweed import SeaweedServer

from lifeboat.assets.objects.s3source import S3Source
from lifeboat.errors import StorageError

# a space, a plus, a percent sign, non-ASCII letters and a tilde: each quoted differently in
# a URL, and a signature over a canonical path quoted otherwise does not match
AWKWARD_KEYS = ("plain.jpg", "dir with space/a+b%20c.jpg", "ünï/çødé~1.mp4", "deep/er/still/x.json")


def _sdk_forbidden(*_: object, **__: object) -> None:
    raise AssertionError("botocore's modelled call was made: lifeboat's signed request was not used")


def _upload(target: S3Source, key: str, data: bytes, sha256: str | None = None, **kw: object) -> str | None:
    """``data`` stored as a restore stores it, with its SHA-256 (``sha256``: another one)."""
    sha = sha256 or hashlib.sha256(data).hexdigest()
    fields: dict[str, object] = {"content_type": None, "metadata": {}} | kw
    return target.upload(key, io.BytesIO(data), size=len(data), sha256=sha, **fields)  # type: ignore[arg-type]


def test_signed_puts_store_awkward_keys_with_their_metadata(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = make_seaweed_bucket(object_lock=False)
    target = S3Source(f"s3://{bucket}/restored", endpoint_url=seaweed.endpoint, region=None)
    monkeypatch.setattr(target.client, "put_object", _sdk_forbidden)  # every PUT signed here
    target._native_tried = True  # the runtime's PUTs: tests/objects/test_native_requests.py
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    for n, key in enumerate(AWKWARD_KEYS):
        data = os.urandom(1000 + n)
        held = _upload(
            target, key, data, content_type="image/jpeg", metadata={"camera": f"x{n}"}, tags={"t": "1"}
        )
        # the store vouched for the bytes (echoed checksum or its ETag), no read-back needed
        assert held == hashlib.sha256(data).hexdigest()
        got = s3.get_object(Bucket=bucket, Key=f"restored/{key}")
        assert got["Body"].read() == data
        assert (got["ContentType"], got["Metadata"]) == ("image/jpeg", {"camera": f"x{n}"})
        tags = s3.get_object_tagging(Bucket=bucket, Key=f"restored/{key}")["TagSet"]
        assert tags == [{"Key": "t", "Value": "1"}]
    assert target._signed_puts


def test_signed_gets_read_awkward_keys_and_exact_versions(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = make_seaweed_bucket(object_lock=False)
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    written: dict[str, tuple[bytes, str]] = {}
    for n, key in enumerate(AWKWARD_KEYS):
        first = s3.put_object(Bucket=bucket, Key=f"media/{key}", Body=b"old " + key.encode())
        s3.put_object(
            Bucket=bucket, Key=f"media/{key}", Body=b"new", ContentType="image/jpeg", Metadata={"n": str(n)}
        )
        written[key] = (b"old " + key.encode(), first["VersionId"])
    source = S3Source(f"s3://{bucket}/media", endpoint_url=seaweed.endpoint, region=None)
    current = {o.key: o for o in source.list_current()}
    assert set(current) == set(AWKWARD_KEYS)
    assert source.signer() is not None  # set up (its probe is a modelled GET, never sent)
    source._native_tried = True  # the runtime's GETs of small objects: tests/objects/test_native_requests.py
    monkeypatch.setattr(source.client, "get_object", _sdk_forbidden)  # every GET signed here
    for n, key in enumerate(AWKWARD_KEYS):
        body, info = source.open_with_info(current[key])
        assert (body.read(), info.content_type, info.metadata) == (b"new", "image/jpeg", {"n": str(n)})
        old, version = written[key]
        body, info = source.open_with_info(replace(current[key], version_id=version))
        assert (body.read(), info.version_id) == (old, version)  # that version, not the latest
    assert source._signed_gets


def test_metadata_with_a_line_break_injects_no_header_and_fails_with_one_line(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str]
) -> None:
    """Metadata comes from the snapshot, and so from whoever wrote the source object: a value
    with CR LF must not become a header of its own in a request lifeboat builds by hand."""
    bucket = make_seaweed_bucket(object_lock=False)
    target = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)
    injected = {"note": "a\r\nx-amz-tagging: owned=1"}
    with pytest.raises(StorageError) as failed:
        _upload(target, "k.txt", b"data", content_type="text/plain", metadata=injected)
    assert "\n" not in str(failed.value) and "uploading k.txt" in str(failed.value)
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert target._signed_puts  # one failed request does not switch signed PUTs off


def test_a_wrong_secret_is_refused_by_the_store_with_one_line(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = make_seaweed_bucket(object_lock=False)
    canary = "canary-" + base64.b32encode(os.urandom(10)).decode()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    target = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)
    modelled = target.client.put_object
    calls: list[str] = []

    def counted(**kw: object) -> object:
        calls.append(str(kw["Key"]))
        return modelled(**kw)

    monkeypatch.setattr(target.client, "put_object", counted)
    with pytest.raises(StorageError) as refused:
        _upload(target, "k.jpg", b"x" * 100, content_type=None, metadata={})
    # signed first and refused (403): the modelled call made once, for its error, and the
    # run's later PUTs left to botocore
    assert calls == ["k.jpg"] and not target._signed_puts
    message = str(refused.value)
    assert "\n" not in message and canary not in message
    assert "SignatureDoesNotMatch" in message or "AccessDenied" in message, message
    monkeypatch.undo()
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # nothing was stored


@pytest.mark.parametrize(
    ("region", "bucket", "head"),
    [
        ("eu-west-1", "media-bucket", "https://media-bucket.s3.eu-west-1.amazonaws.com/"),
        ("us-east-1", "media-bucket", "https://media-bucket.s3.amazonaws.com/"),
        ("eu-west-1", "dotted.bucket", "https://s3.eu-west-1.amazonaws.com/dotted.bucket/"),
    ],
)
def test_signed_requests_go_where_and_are_scoped_as_botocores_own(
    monkeypatch: pytest.MonkeyPatch, region: str, bucket: str, head: str
) -> None:
    """On AWS itself (nothing is sent: the probe stops before the network), the host and the
    signature's region are the ones botocore's modelled call uses: the regional endpoint,
    which networks that only reach regional endpoints need."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    source = S3Source(f"s3://{bucket}/media", endpoint_url=None, region=region)
    signer = source.signer()
    assert signer is not None
    assert signer.url_of("a b/c+d.jpg", "v1+/=") == head + "a%20b/c%2Bd.jpg?versionId=v1%2B%2F%3D"
    assert signer.region == region


def test_a_restore_put_is_signed_with_the_recorded_sha256_and_the_store_checks_that_signature(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot's SHA-256 of an object is the payload hash its PUT is signed with (over
    plain HTTP botocore hashed every body once more for it); SeaweedFS checks the signature."""
    bucket = make_seaweed_bucket(object_lock=False)
    target = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)
    monkeypatch.setattr(target.client, "put_object", _sdk_forbidden)  # the signed PUT or nothing
    target._native_tried = True  # the runtime's PUTs: tests/objects/test_native_requests.py
    signer = target.signer()
    assert signer is not None
    sent: list[dict[str, str]] = []
    send = signer._http.send

    def recorded(prepared: object) -> object:
        sent.append(dict(prepared.headers))  # type: ignore[attr-defined]
        return send(prepared)

    monkeypatch.setattr(signer._http, "send", recorded)
    data = os.urandom(5000)
    hashed_by_the_signer: list[int] = []

    def signer_sha256(body: bytes = b"") -> object:
        hashed_by_the_signer.append(len(body))
        return hashlib.sha256(body)

    monkeypatch.setattr(botocore.auth, "sha256", signer_sha256)
    sha = hashlib.sha256(data).hexdigest()
    assert _upload(target, "photo.jpg", data, content_type=None, metadata={}) == sha
    assert [h["X-Amz-Content-SHA256"] for h in sent] == [sha]
    assert len(data) not in hashed_by_the_signer
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    assert s3.get_object(Bucket=bucket, Key="photo.jpg")["Body"].read() == data
