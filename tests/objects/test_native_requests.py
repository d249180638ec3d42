"""A bucket's small objects are fetched and stored through the AWS Common Runtime's S3
client (assets/objects/native_requests.py), not botocore's transport. SeaweedFS checks SigV4
signatures (moto does not), so these run against it: awkward keys and exact versions read
with their metadata, refreshable credentials asked of botocore, an object grown past the
limit since it was listed streamed instead, a wrong secret refused in one line, and a proxy
or a refusal leaving the GETs to botocore; PUTs store awkward keys with their metadata and
tags, a body that is not the recorded SHA-256 is refused and nothing stored, and headers
the runtime would send otherwise than botocore go on botocore's transport."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from bench.seaweed import SeaweedServer
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import CredentialRetrievalError

from lifeboat.assets.objects.native_requests import NativeRequests, _ThreadStates
from lifeboat.assets.objects.s3source import NATIVE_MAX, S3Source, sendable
from lifeboat.assets.objects.signed_requests import SignedRequests
from lifeboat.errors import StorageError
from tests.objects.test_signed_requests import AWKWARD_KEYS, _sdk_forbidden, _upload


def _runtime_only(source: S3Source, monkeypatch: pytest.MonkeyPatch, method: str = "get") -> None:
    """Neither lifeboat's signed request nor botocore's modelled call may be made for
    ``method`` ("get" or "put"): only the runtime's."""
    monkeypatch.setattr(source.client, f"{method}_object", _sdk_forbidden)
    monkeypatch.setattr(SignedRequests, method, _sdk_forbidden)


def test_native_puts_store_awkward_keys_with_their_metadata_and_tags(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = make_seaweed_bucket(object_lock=False)
    target = S3Source(f"s3://{bucket}/restored", endpoint_url=seaweed.endpoint, region=None)
    assert target.native() is not None
    _runtime_only(target, monkeypatch, "put")
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    for n, key in enumerate(AWKWARD_KEYS):
        data = os.urandom(1000 + n)
        held = _upload(
            target, key, data, content_type="image/jpeg", metadata={"camera": f"x {n}"}, tags={"t": "1 2"}
        )
        assert held == hashlib.sha256(data).hexdigest()  # echoed by the store: no read-back
        got = s3.get_object(Bucket=bucket, Key=f"restored/{key}")
        assert got["Body"].read() == data
        assert (got["ContentType"], got["Metadata"]) == ("image/jpeg", {"camera": f"x {n}"})
        tags = s3.get_object_tagging(Bucket=bucket, Key=f"restored/{key}")["TagSet"]
        assert tags == [{"Key": "t", "Value": "1 2"}]
    assert target.native().enabled  # type: ignore[union-attr]


def test_a_body_that_is_not_its_recorded_sha256_is_refused_and_nothing_is_stored(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str]
) -> None:
    """The PUT is signed with the snapshot's SHA-256 of the object: bytes that changed on
    the way (a damaged restore) are refused by the store, through the runtime and then
    through the signed request that follows it, and the restore fails in one line."""
    bucket = make_seaweed_bucket(object_lock=False)
    target = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)
    assert target.native() is not None
    asked: list[str] = []
    put = NativeRequests.put

    def recorded(self: NativeRequests, path: str, *args: object) -> object:
        asked.append(path)
        return put(self, path, *args)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NativeRequests, "put", recorded)
        with pytest.raises(StorageError) as failed:
            _upload(
                target, "k.bin", b"the bytes sent", sha256=hashlib.sha256(b"the bytes backed up").hexdigest()
            )
    assert asked == ["k.bin"]
    assert "\n" not in str(failed.value) and "uploading k.bin" in str(failed.value)
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    ("metadata", "stored"),
    [({"name": "café"}, False), ({"note": "a\r\nx-amz-tagging: owned=1"}, False), ({"tab": "a\tb"}, True)],
    ids=["latin", "crlf", "tab"],
)
def test_headers_the_runtime_would_send_otherwise_go_on_botocores_transport(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], metadata: dict[str, str], stored: bool
) -> None:
    """The runtime sends a header value as UTF-8, where botocore refuses non-ASCII metadata
    and a line break. Such metadata never goes through the runtime: it is refused in one
    line as before, or stored as botocore sends it."""
    bucket = make_seaweed_bucket(object_lock=False)
    target = S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None)
    assert target.native() is not None
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NativeRequests, "put", _sdk_forbidden)
        if not stored:
            with pytest.raises(StorageError) as refused:
                _upload(target, "k.txt", b"data", metadata=metadata)
            assert "\n" not in str(refused.value) and "uploading k.txt" in str(refused.value)
            assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
            return
        _upload(target, "k.txt", b"data", metadata=metadata)
    got = s3.get_object(Bucket=bucket, Key="k.txt")
    assert (got["Body"].read(), got["Metadata"]) == (b"data", metadata)


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
    _runtime_only(source, monkeypatch)

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
    _runtime_only(source, monkeypatch)
    asked.clear()

    for _ in range(2):
        body, _info = source.open_with_info(obj)
        assert body.read() == b"a"
    assert len(asked) >= 2


def test_a_get_maps_no_memory_of_its_own(
    seaweed: SeaweedServer, make_seaweed_bucket: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime's threads call back into the interpreter two or three times a GET. Each
    call made a thread state and mapped a frame stack for it, then unmapped it (three page
    faults a GET, each mapping undone across both cores); the state is kept instead.
    Counted against the same GETs with the state not kept, in this process: faults of
    its other threads (the collector, the allocator) fall in both counts."""
    bucket = make_seaweed_bucket(object_lock=False)
    s3 = boto3.client("s3", endpoint_url=seaweed.endpoint)
    for n in range(300):
        s3.put_object(Bucket=bucket, Key=f"o{n:03}", Body=b"tiny %d" % n)

    bodies, faults = _faults_of_gets(
        S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None), monkeypatch
    )
    monkeypatch.setattr(_ThreadStates, "keep", lambda self: None)
    # a source of its own: its event-loop threads hold no kept state
    _, faults_not_kept = _faults_of_gets(
        S3Source(f"s3://{bucket}/", endpoint_url=seaweed.endpoint, region=None), monkeypatch
    )

    assert bodies == [b"tiny %d" % n for n in range(300)]
    assert faults_not_kept - faults > 300, (faults, faults_not_kept)  # three a GET when not kept


def _faults_of_gets(source: S3Source, monkeypatch: pytest.MonkeyPatch) -> tuple[list[bytes], int]:
    """The source's objects read through the runtime, and the page faults of those reads."""
    listed = source.list_current()
    assert source.native() is not None
    _runtime_only(source, monkeypatch)
    for obj in listed[:20]:  # the runtime's threads and connections are up
        source.open_with_info(obj)[0].read()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    bodies = [source.open_with_info(obj)[0].read() for obj in listed]
    return bodies, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


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


@dataclass
class ScriptedStore:
    """An HTTP server answering each request as its path says (see ``_answer``), recording
    the requests it was sent: what no S3 server here can be made to do."""

    url: str
    requests: list[bytes]
    release: threading.Event  # the held answers' end


@pytest.fixture
def scripted_store() -> Iterator[ScriptedStore]:
    listener = socket.create_server(("127.0.0.1", 0))
    store = ScriptedStore(f"http://127.0.0.1:{listener.getsockname()[1]}/bucket/", [], threading.Event())

    def answer(conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            head, _, body = request.partition(b"\r\n\r\n")
            declared = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            length = int(declared.group(1)) if declared else 0
            while len(body) < length:  # a PUT's body, read whole before the answer
                body += conn.recv(65536)
            store.requests.append(head + b"\r\n\r\n" + body)
            conn.sendall(_answer(request.split(b" ")[1], store.release))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield store
    store.release.set()
    listener.close()


def _answer(path: bytes, release: threading.Event) -> bytes:
    """Metadata as raw bytes: UTF-8 for "utf8", ISO-8859-1 for "latin" (what clients other
    than the SDKs can leave in a store; botocore refuses to write either); a range of a
    larger object for "grown"; a body shorter than its Content-Length for "short"; nothing
    until the test ends for "held"; a PUT's answer below "put/"."""
    if path.startswith(b"/bucket/put/"):
        return b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "put"\r\n\r\n'
    if b"held" in path:
        release.wait()
        return b""
    if b"grown" in path:
        return (
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 2\r\nContent-Range: bytes 0-1/9999999\r\n\r\nok"
        )
    if b"short" in path:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok"
    value = "café".encode("utf-8" if b"utf8" in path else "latin-1")
    return (
        b"HTTP/1.1 206 Partial Content\r\nContent-Length: 2\r\nContent-Range: bytes 0-1/2\r\nx-amz-meta-n: "
        + value
        + b"\r\n\r\nok"
    )


def _native(url: str, stall_timeout: float = 5) -> NativeRequests:
    credentials = Credentials("AKIDEXAMPLE", "not-a-real-secret")
    return NativeRequests(
        url,
        "us-east-1",
        credentials,
        connections=2,
        stall_timeout=stall_timeout,
        verify=True,
        max_size=NATIVE_MAX,
    )


@pytest.mark.parametrize(
    ("headers", "through_the_runtime"),
    [
        ({"Content-Type": "image/jpeg", "x-amz-meta-camera": "x 1", "x-amz-tagging": "a=b%20c"}, True),
        ({"x-amz-meta-note": " padded"}, False),  # the runtime trims it, botocore keeps it
        ({"x-amz-meta-note": "padded "}, False),
        ({"x-amz-meta-note": ""}, False),
        ({"x-amz-meta-two words": "v"}, False),  # not an HTTP token: the runtime refuses it
        ({"x-amz-meta-at@": "v"}, False),
        ({"x-amz-meta-note": "caf\u00e9"}, False),
        ({"x-amz-meta-note": "a\r\nb"}, False),
    ],
)
def test_only_headers_the_runtime_sends_as_botocore_does_go_through_it(
    headers: dict[str, str], through_the_runtime: bool
) -> None:
    assert sendable(headers) is through_the_runtime


def test_a_put_of_an_awkward_key_is_signed_as_botocore_signs_it(scripted_store: ScriptedStore) -> None:
    """S3 checks a signature over the path as sent, quoted once; SeaweedFS also takes one
    over a path quoted twice, so this is checked here: the signature the runtime sent is
    the one botocore computes for the same request, headers, date and payload hash."""
    native = _native(scripted_store.url)
    body = b"some bytes"
    sha = hashlib.sha256(body).hexdigest()
    sent = {"Content-Type": "text/plain", "x-amz-meta-camera": "x 1", "x-amz-tagging": "t=1%202"}
    key = "put/dir with space/x//y/./z/a+b=(c)~d.txt"  # quoted once, not normalised, as S3 signs it
    answered = native.put(SignedRequests.quoted(key), body, sent, sha)

    assert answered is not None and answered["etag"] == '"put"'
    [raw] = scripted_store.requests
    head, _, received = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    signed_names = re.search(r"SignedHeaders=([^,]+)", headers["authorization"]).group(1).split(";")  # type: ignore[union-attr]
    request = AWSRequest(
        method, f"http://{headers['host']}{path}", {n: headers[n] for n in signed_names}, received
    )
    request.context["timestamp"] = headers["x-amz-date"]
    signer = S3SigV4Auth(Credentials("AKIDEXAMPLE", "not-a-real-secret"), "s3", "us-east-1")
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    assert received == body and headers["x-amz-content-sha256"] == sha
    assert path == "/bucket/put/dir%20with%20space/x//y/./z/a%2Bb%3D%28c%29~d.txt"
    assert headers["authorization"].endswith("Signature=" + expected)
    assert set(signed_names) == set(headers) - {"user-agent", "authorization"}  # S3 wants x-amz-* signed


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_header_bytes_are_read_as_botocore_reads_them_and_others_go_to_botocore_quietly(
    scripted_store: ScriptedStore, capfd: pytest.CaptureFixture[str]
) -> None:
    """The runtime decodes headers as UTF-8, botocore as ISO-8859-1: metadata recorded
    either way must be the same string, or a restore would write other bytes back. A value
    the runtime cannot decode gives no answer (botocore's transport reads it) and prints
    nothing on standard error."""
    native = _native(scripted_store.url)
    fetched = native.get("utf8.jpg")
    assert fetched is not None and fetched.body == b"ok"
    assert fetched.headers["x-amz-meta-n"] == "café".encode().decode("latin-1")  # botocore's reading

    assert native.get("latin.jpg") is None and native.enabled
    assert capfd.readouterr().err == ""


def test_only_a_range_is_asked_and_an_object_larger_than_it_goes_to_botocore(
    scripted_store: ScriptedStore,
) -> None:
    """The runtime holds a whole answer before it hands over the headers: each GET asks for
    the first NATIVE_MAX bytes, and one whose total is larger is streamed by botocore's
    transport instead; a body shorter than its Content-Length is not taken either."""
    native = _native(scripted_store.url)

    assert native.get("grown.mp4") is None
    assert f"range: bytes=0-{NATIVE_MAX - 1}".encode() in scripted_store.requests[-1].lower()
    assert native.get("short.jpg") is None
    assert native.enabled  # each is the object's, not the store's


def test_a_get_not_done_within_the_stall_timeout_goes_to_botocore_for_the_rest_of_the_run(
    scripted_store: ScriptedStore,
) -> None:
    """The runtime reports nothing before an answer's end, so its timeout cannot tell a
    stall from a slow link: botocore's transport, which checks each read, takes over."""
    native = _native(scripted_store.url, stall_timeout=0.5)

    assert native.get("held.jpg") is None
    assert not native.enabled
