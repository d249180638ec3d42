"""GETs of a bucket's small objects through the AWS Common Runtime's S3 client (awscrt, the
C library boto3 itself uses with its ``crt`` extra): connections, SigV4 signing and HTTP
parsing run in C on the runtime's own event-loop threads, and the interpreter only receives
the headers and the body.

Why: a bucket backup's client CPU was mostly the request itself. Measured on SeaweedFS (the
bench's 20,000 objects, 1 GB, 2 cores shared with the server), client CPU per GET: 0.8-0.9
ms signed by lifeboat and sent on botocore's transport, 0.4-0.5 ms of it urllib3 alone,
0.47-0.52 ms here, body included; all 20,000 in 13.5-15.9 s against 26.7-27.7 s for
presigned URLs over urllib3 with 32 threads (bench/s3_floor.py).

Used only where it asks the same store the same way as botocore would: objects up to
``max_size`` bytes (s3source.NATIVE_MAX; each is held in memory until it is stored, one per
transfer thread), on plain HTTP or HTTPS with botocore's certificate check (its CA bundle, or none
when the asset turned verification off), without a proxy. The URL and the signing region
are those signed_requests.py resolved from botocore. Every answer but a success, and every
failure to connect, is given back as None: the caller then makes its signed request and,
failing that, botocore's modelled call, which retries, follows redirects and raises the
store's own error. A refusal only the SDK gets past switches these GETs off for the run.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from awscrt import auth, http, io, s3
from awscrt.exceptions import AwsCrtError
from botocore.credentials import RefreshableCredentials

from lifeboat.assets.objects.signed_requests import SDK_ONLY_STATUSES, USER_AGENT


@dataclass(frozen=True)
class Fetched:
    """A successful GET: the answer's headers (names lower-cased) and its whole body."""

    headers: dict[str, str]
    body: bytes


class NativeStalled(Exception):
    """No byte of an answer for the stall timeout: the request was cancelled."""


class _TooLarge(Exception):
    """The object has grown past the size held in memory since it was listed: streamed
    instead."""


class _Answer:
    """What the runtime's threads hand over for one GET, and when they last did."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.status = 0
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []
        self.progress = time.monotonic()

    def on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self.status = status_code
        # the runtime decodes a header as UTF-8, botocore (http.client) as ISO-8859-1: the
        # same bytes read as botocore reads them, so that both ways record the same
        # metadata (a value that is not UTF-8 never gets here: see _quiet_undecodable)
        self.headers = {name.lower(): value.encode().decode("latin-1") for name, value in headers}
        self.progress = time.monotonic()
        if int(self.headers.get("content-length") or 0) > self.max_size:
            raise _TooLarge()  # the runtime ends the request with it

    def on_body(self, chunk: bytes, **_: Any) -> None:
        self.parts.append(bytes(chunk))
        self.progress = time.monotonic()


class NativeGets:
    """GETs of one bucket's objects (``get``), for an objects source's transfer threads."""

    def __init__(
        self,
        url_head: str,
        region: str,
        credentials: Any,
        *,
        connections: int,
        stall_timeout: float,
        verify: bool | str,
        max_size: int,
    ) -> None:
        parts = urllib.parse.urlsplit(url_head)
        self.max_size = max_size  # a larger answer is not taken (get: None)
        self._host = parts.netloc
        self._path_head = parts.path
        self._stall = stall_timeout
        self.enabled = True
        self._install_quiet_hook()
        loops = io.EventLoopGroup()  # a thread per core
        bootstrap = io.ClientBootstrap(loops, io.DefaultHostResolver(loops))
        tls: dict[str, Any] = {"tls_mode": s3.S3RequestTlsMode.DISABLED}
        if parts.scheme == "https":
            tls = {"tls_mode": s3.S3RequestTlsMode.ENABLED}
            if verify is not True:
                options = io.TlsContextOptions()
                if isinstance(verify, str):
                    options.override_default_trust_store_from_path(ca_filepath=verify)
                else:
                    options.verify_peer = False
                tls["tls_connection_options"] = io.ClientTlsContext(options).new_connection_options()
        signing = s3.create_default_s3_signing_config(
            region=region, credential_provider=_provider(credentials, self._disable)
        )
        self._client = s3.S3Client(
            bootstrap=bootstrap,
            region=region,
            signing_config=signing,
            # retries are the caller's (the signed request, then botocore's own attempts)
            retry_config=s3.S3RetryConfig(retry_mode=s3.S3RetryMode.NONE),
            max_active_connections_override=connections,
            connect_timeout_ms=max(1, int(stall_timeout * 1000)),
            **tls,
        )

    @staticmethod
    def _install_quiet_hook() -> None:
        if not getattr(sys.unraisablehook, "_lifeboat_native_gets", False):
            sys.unraisablehook = _quiet_undecodable(sys.unraisablehook)

    def _disable(self) -> None:
        self.enabled = False

    @classmethod
    def for_client(
        cls,
        client: Any,
        credentials: Any,
        url_head: str,
        region: str,
        *,
        connections: int,
        stall_timeout: float,
        max_size: int,
    ) -> NativeGets | None:
        """For a botocore S3 client's bucket (``url_head``, ``region``: resolved by
        signed_requests.py), unless its requests go through a proxy (None: botocore's
        transport speaks to it)."""
        session = client._endpoint.http_session
        if session._proxy_config.proxy_url_for(url_head):
            return None
        verify = session._verify
        return cls(
            url_head,
            region,
            credentials,
            connections=connections,
            stall_timeout=stall_timeout,
            verify=verify if isinstance(verify, str) else bool(verify),
            max_size=max_size,
        )

    def get(self, quoted_path: str) -> Fetched | None:
        """The object at ``quoted_path`` (below the URL head, quoted as botocore quotes a key,
        with its ``?versionId=``), or None when the caller should ask it another way.
        NativeStalled when the store sent nothing for the stall timeout."""
        answer = _Answer(self.max_size)
        headers = http.HttpHeaders([("Host", self._host), ("User-Agent", USER_AGENT)])
        request = self._client.make_request(
            type=s3.S3RequestType.DEFAULT,
            operation_name="GetObject",
            request=http.HttpRequest("GET", self._path_head + quoted_path, headers),
            on_headers=answer.on_headers,
            on_body=answer.on_body,
        )
        finished = request.finished_future
        while True:
            try:
                finished.result(timeout=self._stall)
                break
            except TimeoutError:
                if time.monotonic() - answer.progress >= self._stall:
                    request.cancel()
                    raise NativeStalled() from None
            except s3.S3ResponseError as refused:
                if refused.status_code in SDK_ONLY_STATUSES:
                    self.enabled = False
                return None
            except (AwsCrtError, _TooLarge):  # a connection refused or dropped: retried by the caller
                return None
        if not 200 <= answer.status < 300:
            return None
        return Fetched(answer.headers, b"".join(answer.parts))


def _provider(credentials: Any, failed: Callable[[], None]) -> auth.AwsCredentialsProvider:
    """The runtime's view of botocore's credentials: fixed ones once, refreshable ones (a
    role, SSO) asked of botocore at each signing, so that botocore refreshes them. A
    refresh that fails calls ``failed`` and gives empty credentials, which sign nothing the
    store takes: the runtime would print the exception, and botocore's own request, made
    instead, raises it as the store's error."""
    if not isinstance(credentials, RefreshableCredentials):
        frozen = credentials.get_frozen_credentials()
        return auth.AwsCredentialsProvider.new_static(frozen.access_key, frozen.secret_key, frozen.token)

    def current() -> auth.AwsCredentials:
        try:
            frozen = credentials.get_frozen_credentials()  # thread-safe: botocore locks its refresh
        except Exception:
            failed()
            return auth.AwsCredentials("", "")
        return auth.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    return auth.AwsCredentialsProvider.new_delegate(current)


def _quiet_undecodable(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """``sys.unraisablehook`` that drops what the runtime raises when an answer's header is
    not UTF-8 (metadata some clients write as ISO-8859-1): the runtime cannot hand such
    headers over, ends that GET, and it is made again on botocore's transport, which reads
    them; the interpreter would print the error on standard error meanwhile. Anything else
    goes to ``previous``."""

    def hook(unraisable: Any) -> None:
        if (
            isinstance(unraisable.exc_value, UnicodeDecodeError)
            and type(unraisable.object).__module__ == s3.__name__
        ):
            return
        previous(unraisable)

    hook._lifeboat_native_gets = True  # type: ignore[attr-defined]
    return hook
