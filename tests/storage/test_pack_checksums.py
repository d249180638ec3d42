"""How a pack's PUT vouches for its bytes: with its id (its SHA-256) as the checksum the
store checks, the body signed over plain HTTP and left unsigned over TLS (as botocore does
for the CRC32 it adds itself), and no checksum header at all where botocore's checksums are
turned off for a store that refuses them. What the request carries is checked before it is
sent (no store answers here); what a store does with it: tests/storage/test_conformance.py
against SeaweedFS, and below a store that refuses the headers, through a proxy."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from lifeboat.storage.s3 import S3Storage
from tests.cli.conftest import write_policy
from tests.harness import LifeboatCli
from tests.harness.stallproxy import StallProxy

PACK = b"pack bytes " * 1000
PACK_ID = hashlib.sha256(PACK).hexdigest()


class _NoBody:
    def stream(self, **_: Any) -> Any:
        return iter([b""])


def sent_put(endpoint: str, sha256: str | None) -> dict[str, str]:
    """The headers of the PUT ``S3Storage.put`` makes of a pack, answered 200 unsent."""
    storage = S3Storage("bucket1", "repo", endpoint_url=endpoint, region="us-east-1")
    seen: dict[str, str] = {}

    def answer(request: Any, **_: Any) -> AWSResponse:
        for name, value in request.headers.items():
            seen[name.lower()] = value.decode() if isinstance(value, bytes) else value
        return AWSResponse(request.url, 200, {"x-amz-version-id": "v1"}, _NoBody())

    storage._client.meta.events.register_first("before-send.s3.PutObject", answer)
    storage.put(f"data/{PACK_ID[:2]}/{PACK_ID}", PACK, sha256=sha256)
    return seen


@pytest.fixture(autouse=True)
def _checksums_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's default, whatever the environment says (the suite's credentials are
    left alone: boto3's default session keeps the first it finds)."""
    monkeypatch.delenv("AWS_REQUEST_CHECKSUM_CALCULATION", raising=False)


def signed_headers(headers: dict[str, str]) -> list[str]:
    return headers["authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")


def test_a_pack_over_tls_is_vouched_for_by_its_signed_sha256_not_a_hash_of_its_body():
    headers = sent_put("https://127.0.0.1:1", PACK_ID)
    assert base64.b64decode(headers["x-amz-checksum-sha256"]).hex() == PACK_ID
    assert "x-amz-checksum-sha256" in signed_headers(headers)
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"  # no second hash of 8 MiB
    assert not any(h.startswith("x-amz-checksum-crc") for h in headers)


def test_a_pack_over_plain_http_is_signed_with_its_body():
    headers = sent_put("http://127.0.0.1:1", PACK_ID)
    assert headers["x-amz-content-sha256"] == PACK_ID  # botocore signs every body over HTTP
    assert base64.b64decode(headers["x-amz-checksum-sha256"]).hex() == PACK_ID


def test_an_object_without_a_known_sha256_keeps_botocores_own_checksum():
    headers = sent_put("https://127.0.0.1:1", None)
    assert "x-amz-checksum-sha256" not in headers
    assert any(h.startswith("x-amz-checksum-crc") or h == "x-amz-trailer" for h in headers)


def test_checksums_turned_off_for_a_store_that_refuses_them_send_none(monkeypatch):
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    headers = sent_put("https://127.0.0.1:1", PACK_ID)
    assert not any(h.startswith("x-amz-checksum") for h in headers)


def test_a_store_that_refuses_checksum_headers_is_named_at_init_with_the_way_around(
    s3_server, make_bucket, tmp_path
):
    """In front of moto, a proxy answers x-amz-checksum-sha256 400 InvalidArgument (as B2
    answers every x-amz-checksum-* header; botocore's own CRC32 passes here, so only the
    probe's SHA-256 can make `init` fail). `init` fails on its probe's PUT in one line that
    says how to run lifeboat against such a store; run that way, init, a backup and its
    restore work."""
    proxy = StallProxy(s3_server)
    proxy.refuse_headers = {"x-amz-checksum-sha256"}
    try:
        source = tmp_path / "src"
        source.mkdir()
        (source / "config.yml").write_bytes(b"listen: 0.0.0.0\n" * 5000)
        bucket = make_bucket(object_lock=False)
        policy = write_policy(tmp_path, source, f"s3://{bucket}/repo", endpoint_url=proxy.endpoint)
        cli = LifeboatCli(policy, cwd=tmp_path, timeout=120)
        refused = cli.run("init", "--recovery-key-out", "rk", check=False)
        assert refused.returncode != 0 and proxy.refused
        assert refused.stderr.count("\n") <= 2 and "Traceback" not in refused.stderr
        assert "InvalidArgument" in refused.stderr, refused.stderr
        assert "AWS_REQUEST_CHECKSUM_CALCULATION=when_required" in refused.stderr
        before = proxy.refused
        around = {"AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"}
        cli.run("init", "--recovery-key-out", "rk", env=around)
        cli.run("backup", "config", env=around)
        cli.run("restore", "config", "--target", str(tmp_path / "out"), "--recovery-key", "rk", env=around)
        assert proxy.refused == before
        assert (tmp_path / "out" / "src" / "config.yml").read_bytes() == (source / "config.yml").read_bytes()
    finally:
        proxy.close()
