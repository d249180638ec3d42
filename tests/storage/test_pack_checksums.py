"""How a pack's PUT vouches for its bytes: with its id (its SHA-256) as the checksum the
store checks, the body signed over plain HTTP and left unsigned over TLS (as botocore does
for the CRC32 it adds itself), and no checksum header at all where botocore's checksums are
turned off for a store that refuses them. What the request carries is checked before it is
sent (no store answers here); what a store does with it: tests/storage/test_conformance.py
against SeaweedFS."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from lifeboat.storage.s3 import S3Storage

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
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
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
