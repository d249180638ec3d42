"""A bucket's small objects are fetched through the AWS Common Runtime's S3 client
(assets/objects/native_gets.py), not botocore's transport. SeaweedFS checks SigV4
signatures (moto does not), so these run against it: awkward keys and exact versions read
with their metadata, refreshable credentials asked of botocore, an object grown past the
limit since it was listed streamed instead, a wrong secret refused in one line, and a proxy
or a refusal leaving the GETs to botocore."""

from __future__ import annotations

import base64
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from bench.seaweed import SeaweedServer
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import CredentialRetrievalError

from lifeboat.assets.objects.native_gets import NativeGets
from lifeboat.assets.objects.s3source import NATIVE_MAX, S3Source
from lifeboat.assets.objects.signed_requests import SignedRequests
from lifeboat.errors import StorageError
from tests.objects.test_signed_requests import AWKWARD_KEYS, _sdk_forbidden


def _native_only(source: S3Source, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither lifeboat's signed GET nor botocore's modelled one may be made."""
    monkeypatch.setattr(source.client, "get_object", _sdk_forbidden)
    monkeypatch.setattr(SignedRequests, "get", _sdk_forbidden)


def test_native_gets_read_awkward_keys_and_exact_versions_with_their_metadata(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = make_seaweed_bucket(object_lock=False)
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    old_versions = {}
    for n, key in enumerate(AWKWARD_KEYS):
        first = s3.put_object(Bucket=bucket, Key=f"media/{key}", Body=b"old " + key.encode())
        s3.put_object(
            Bucket=bucket,
            Key=f"media/{key}",
            Body=b"new" * (n + 1),
            ContentType="image/jpeg",
            Metadata={"n": str(n)},
            Tagging="t=1",
        )
        old_versions[key] = first["VersionId"]
    source = S3Source(f"s3://{bucket}/media", endpoint_url=seaweed.endpoint, region=None)
    current = {o.key: o for o in source.list_current()}
    assert source.native() is not None
    _native_only(source, monkeypatch)

    for n, key in enumerate(AWKWARD_KEYS):
        body, info = source.open_with_info(current[key])
        assert body.read() == b"new" * (n + 1)
        assert (info.content_type, info.metadata, info.tags, info.size) == (
            "image/jpeg",
            {"n": str(n)},
            {"t": "1"},
            3 * (n + 1),
        )
        body, info = source.open_with_info(replace(current[key], version_id=old_versions[key]))
        assert (body.read(), info.version_id) == (b"old " + key.encode(), old_versions[key])


def test_refreshable_credentials_are_asked_of_botocore_at_signing(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role's or SSO's credentials expire: the runtime asks botocore for them at each
    signing, so that botocore refreshes them, rather than keeping the first ones."""
    bucket = make_seaweed_bucket(object_lock=False)
    boto3.client("s3", endpoint_url=seaweed.endpoint).put_object(Bucket=bucket, Key="a.jpg", Body=b"a")
    source = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)
    [obj] = source.list_current()
    asked: list[int] = []

    def refresh() -> dict[str, str]:
        asked.append(1)
        # inside botocore's advisory window (15 minutes): refreshed whenever asked
        expiry = datetime.now(UTC) + timedelta(minutes=12)
        return {
            "access_key": os.environ["AWS_ACCESS_KEY_ID"],
            "secret_key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "token": "",
            "expiry_time": expiry.isoformat(),
        }

    refreshable = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    monkeypatch.setattr(source._session, "get_credentials", lambda: refreshable)
    assert source.native() is not None  # the signer's probe is a modelled GET, never sent
    _native_only(source, monkeypatch)
    asked.clear()

    for _ in range(2):
        body, _info = source.open_with_info(obj)
        assert body.read() == b"a"
    assert len(asked) >= 2


def test_an_object_grown_past_the_limit_since_its_listing_is_streamed(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str]
) -> None:
    """A sharded run reads objects an inventory listed hours earlier: one that grew past
    what is held in memory is read through botocore's transport, a block at a time."""
    bucket = make_seaweed_bucket(object_lock=False)
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    s3.put_object(Bucket=bucket, Key="grows.mp4", Body=b"small")
    source = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)
    [listed] = source.list_current()
    # the runtime holds a whole answer before handing it over: only a range is asked for
    big = os.urandom(24 << 20)
    s3.put_object(Bucket=bucket, Key="grows.mp4", Body=big)

    body, info = source.open_with_info(listed)

    assert type(body).__name__ == "StallGuard"  # streamed, not a buffer
    assert (body.read(), info.size) == (big, len(big))
    assert source.native() is not None and source.native().enabled  # type: ignore[union-attr]


def test_a_wrong_secret_is_refused_by_the_store_and_leaves_the_gets_to_botocore(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = make_seaweed_bucket(object_lock=False)
    boto3.client("s3", endpoint_url=seaweed.endpoint).put_object(Bucket=bucket, Key="k.jpg", Body=b"x")
    [obj] = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None).list_current()
    canary = "canary-" + base64.b32encode(os.urandom(10)).decode()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    source = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)

    with pytest.raises(StorageError) as refused:
        source.open_with_info(obj)

    native = source.native()
    assert native is not None and not native.enabled  # refused (403): not asked again this run
    assert not source._signed_gets
    message = str(refused.value)
    assert "\n" not in message and canary not in message
    assert "SignatureDoesNotMatch" in message or "AccessDenied" in message or "403" in message, message


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # what the runtime would print
def test_a_failed_credential_refresh_prints_nothing_and_ends_in_one_line(
    seaweed: SeaweedServer,
    make_seaweed_bucket: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A role's refresh that fails (a credential process printing its own output) reaches
    the runtime's signing callback: nothing of it may be printed by the runtime, and the
    GET ends as botocore's own would, in one line."""
    bucket = make_seaweed_bucket(object_lock=False)
    boto3.client("s3", endpoint_url=seaweed.endpoint).put_object(Bucket=bucket, Key="a.jpg", Body=b"a")
    source = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)
    [obj] = source.list_current()
    canary = "canary-" + base64.b32encode(os.urandom(10)).decode()
    failing: list[bool] = []

    def refresh() -> dict[str, str]:
        if failing:
            raise CredentialRetrievalError(provider="process", error_msg=f"{canary}\nsecond line")
        expiry = datetime.now(UTC) + timedelta(minutes=12)  # refreshed whenever asked
        secret = os.environ["AWS_SECRET_ACCESS_KEY"]
        return {
            "access_key": os.environ["AWS_ACCESS_KEY_ID"],
            "secret_key": secret,
            "token": "",
            "expiry_time": expiry.isoformat(),
        }

    refreshable = RefreshableCredentials.create_from_metadata(refresh(), refresh, "process")
    monkeypatch.setattr(source._session, "get_credentials", lambda: refreshable)
    monkeypatch.setattr(source.client._request_signer, "_credentials", refreshable)  # botocore's calls too
    assert source.native() is not None
    failing.append(True)
    refreshable._expiry_time = datetime.now(UTC) + timedelta(minutes=5)  # due: refreshed or refused

    with pytest.raises(StorageError) as failed:
        source.open_with_info(obj)

    native = source.native()
    assert native is not None and not native.enabled  # turned off by its signing callback
    assert "\n" not in str(failed.value) and canary not in str(failed.value)
    printed = capfd.readouterr()
    assert canary not in printed.out + printed.err and printed.err == ""


def test_a_proxy_leaves_the_gets_to_botocores_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore speaks to the proxy; the runtime is not told about it, so it is not used."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    source = S3Source("s3://media-bucket/", endpoint_url=None, region="eu-west-1")
    assert source.signer() is not None
    assert source.native() is None


@pytest.fixture
def raw_headers_server() -> Iterator[str]:
    """An HTTP server answering every GET with metadata as raw bytes: UTF-8 for a path
    holding "utf8", ISO-8859-1 otherwise (what clients other than the SDKs can leave in a
    store; botocore refuses to write either, so no S3 server here is given one)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                value = "café".encode("utf-8" if b"utf8" in request.split(b" ")[1] else "latin-1")
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-amz-meta-n: " + value + b"\r\n\r\nok"
                )

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/bucket/"
    listener.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_header_bytes_are_read_as_botocore_reads_them_and_others_go_to_botocore_quietly(
    raw_headers_server: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """The runtime decodes headers as UTF-8, botocore as ISO-8859-1: metadata recorded
    either way must be the same string, or a restore would write other bytes back. A value
    the runtime cannot decode gives no answer (botocore's transport reads it) and prints
    nothing on standard error."""
    native = NativeGets(
        raw_headers_server,
        "us-east-1",
        Credentials("AKIDEXAMPLE", "not-a-real-secret"),
        connections=2,
        stall_timeout=5,
        verify=True,
        max_size=NATIVE_MAX,
    )
    fetched = native.get("utf8.jpg")
    assert fetched is not None and fetched.body == b"ok"
    assert fetched.headers["x-amz-meta-n"] == "café".encode().decode("latin-1")  # botocore's reading

    assert native.get("latin.jpg") is None and native.enabled
    assert capfd.readouterr().err == ""
