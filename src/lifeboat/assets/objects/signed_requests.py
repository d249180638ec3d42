"""GETs and single-part PUTs of objects, signed here with botocore's SigV4 signer and sent on
botocore's own transport (its proxies, CA bundle, timeouts and connection pool).

A modelled ``get_object``/``put_object`` spends most of its CPU around the request: events,
parameter validation, serialising, endpoint rules and parsing the answer; a presigned URL
still runs most of that to make the URL. Measured on SeaweedFS with 20 KB objects, client
CPU per PUT: 3.4 ms modelled, 2.6 ms through a presigned URL, 1.8 ms signed here. A bucket
backup makes one GET per object, a restore one PUT.

Where to send and how to sign come from botocore itself: one modelled ``get_object`` of a
probe key, stopped before it is sent, gives the URL before the key (regional or global host,
virtual-hosted or path style, as the client resolved them) and the region its signature was
scoped to. A key goes where the probe's went, quoted as botocore quotes a key.

Only the plain case is handled here: the caller gets the answer and makes the modelled call
whenever it is not a success (botocore then retries with its backoff and rate limiter,
follows a redirect, speaks a store's own auth, or raises the store's error).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

import botocore
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.utils import percent_encode

from lifeboat import __version__

PROBE_KEY = "lifeboat-url-probe"
USER_AGENT = f"lifeboat/{__version__} botocore/{botocore.__version__}"
# answers after which lifeboat's own requests stop for the run: the store wants something
# only the SDK does (a redirect to another region, an auth scheme or signature of its own)
SDK_ONLY_STATUSES = frozenset({301, 302, 307, 308, 400, 401, 403})


class StoreBusy(Exception):
    """The store asked the runtime's request to slow down (a 429 or a 5xx): botocore's
    modelled call, with its backoff and rate limiter, makes it next, not another request
    of lifeboat's at once."""


def busy(status: int) -> bool:
    """Whether an answer's status asks the client to slow down."""
    return status == 429 or status >= 500


@dataclass(frozen=True)
class Answer:
    """A store's answer to a signed request: its status, headers and (for a GET) the
    response itself, its body not read yet."""

    status: int
    headers: Any
    response: Any

    @property
    def ok(self) -> bool:
        """Whether the store took or served it (any 2xx)."""
        return 200 <= self.status < 300

    @property
    def sdk_only(self) -> bool:
        """Whether this refusal means the store wants botocore's own calls from now on."""
        return self.status in SDK_ONLY_STATUSES


class _Probed(Exception):
    """Stops the probe request before it is sent, carrying what botocore made of it."""

    def __init__(self, url: str, authorization: str) -> None:
        super().__init__("probe")
        self.url = url
        self.authorization = authorization


def resolve_probe(client: Any, bucket: str) -> tuple[str, str]:
    """(URL up to the key, signing region) as botocore's modelled call resolves them."""

    def stop(request: Any, **_: Any) -> None:
        if urllib.parse.urlsplit(request.url).path.endswith("/" + PROBE_KEY):
            raise _Probed(request.url, str(request.headers.get("Authorization", "")))

    client.meta.events.register_first("before-send.s3.GetObject", stop)
    try:
        client.get_object(Bucket=bucket, Key=PROBE_KEY)
    except _Probed as probed:
        parts = urllib.parse.urlsplit(probed.url)
        scope = probed.authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
        if len(scope) < 5:
            raise ValueError("the probe request was not signed with SigV4") from None
        return f"{parts.scheme}://{parts.netloc}{parts.path[: -len(PROBE_KEY)]}", scope[2]
    finally:
        client.meta.events.unregister("before-send.s3.GetObject", stop)
    raise ValueError("the probe request was sent")


class SignedRequests:
    """Signs and sends GETs and single-part PUTs of one bucket's objects for an S3 client."""

    def __init__(self, client: Any, credentials: Any, bucket: str) -> None:
        self._credentials = credentials  # botocore credentials (refreshed when they expire)
        self._http = client._endpoint.http_session
        self.url_head, self.region = resolve_probe(client, bucket)

    def url_of(self, key: str, version_id: str | None = None) -> str:
        """Where ``key`` of the bucket is read or written (quoted as botocore quotes keys)."""
        return self.url_head + self.quoted(key, version_id)

    @staticmethod
    def quoted(key: str, version_id: str | None = None) -> str:
        """``key`` as its URL ends after the URL head, with the version asked for."""
        tail = str(percent_encode(key, safe="/~"))
        if version_id:
            tail += "?versionId=" + str(percent_encode(version_id, safe="-_.~"))
        return tail

    def _send(
        self, request: AWSRequest, *, stream: bool = False, payload_sha256: str | None = None
    ) -> Answer:
        request.headers["User-Agent"] = USER_AGENT
        credentials = self._credentials.get_frozen_credentials()
        _KnownPayloadAuth(credentials, "s3", self.region, payload_sha256).add_auth(request)
        prepared = request.prepare()
        prepared.stream_output = stream
        response = self._http.send(prepared)
        return Answer(response.status_code, response.headers, response)

    def get(self, key: str, version_id: str | None) -> Answer:
        """A GET of the object (its body is the answer's response, unread)."""
        return self._send(AWSRequest("GET", self.url_of(key, version_id)), stream=True)

    def put(self, key: str, body: bytes, headers: dict[str, str], sha256: str | None = None) -> Answer:
        """A PUT of ``body`` under ``key`` with ``headers``; ``sha256``, the body's SHA-256
        when the caller knows it, is the signed payload hash (else it is computed)."""
        request = AWSRequest("PUT", self.url_of(key), headers=dict(headers), data=body)
        return self._send(request, payload_sha256=sha256)


class _KnownPayloadAuth(S3SigV4Auth):
    """botocore's S3 signer, but a payload hash the caller already knows is not computed
    again: over plain HTTP botocore hashes every PUT body for its signature. A hash that is
    not the body's makes the store refuse the request (a mismatched content SHA-256), and
    the modelled call that follows hashes the body itself."""

    def __init__(self, credentials: Any, service: str, region: str, payload_sha256: str | None) -> None:
        super().__init__(credentials, service, region)
        self._payload_sha256 = payload_sha256

    def payload(self, request: Any) -> str:
        """The body's SHA-256 in hex, as the signature covers it."""
        return self._payload_sha256 or str(super().payload(request))
