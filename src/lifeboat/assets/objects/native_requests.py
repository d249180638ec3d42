"""GETs and PUTs of a bucket's small objects through the AWS Common Runtime's S3 client
(awscrt, the C library boto3 itself uses with its ``crt`` extra): connections, SigV4 signing
and HTTP parsing run in C on the runtime's own event-loop threads, and the interpreter only
receives the headers and the body.

Why: a bucket backup's client CPU was mostly the request itself. Measured on SeaweedFS (the
bench's 20,000 objects, 1 GB, 2 cores shared with the server), client CPU per GET: 0.8-0.9
ms signed by lifeboat and sent on botocore's transport, 0.4-0.5 ms of it urllib3 alone,
0.47-0.52 ms here, body included; all 20,000 in 13.5-15.9 s against 26.7-27.7 s for
presigned URLs over urllib3 with 32 threads (bench/s3_floor.py).

Used only where it asks the same store the same way as botocore would: objects listed up to
``max_size`` bytes (s3source.NATIVE_MAX), on plain HTTP or HTTPS trusting what botocore
trusts (certifi's bundle, the asset's CA bundle, or nothing when the asset turned
verification off), without a proxy. The URL and the signing region are those
signed_requests.py resolved from botocore.

The runtime holds an answer's whole body before it hands over its headers, so each GET asks
for the first ``max_size`` bytes only (a Range): an object grown since its listing is never
held whole (by a store that honours Range; one that ignores it sends the whole object,
which is then refused as too large), and its total size, from Content-Range, sends it to
botocore's transport, which streams it. Every answer but a success, a connection that
failed, and a GET that has not finished within the stall timeout (the runtime reports no
progress before the end) give None: the caller then makes its signed request and, failing
that, botocore's modelled call, which retry, check each read for stalls, follow redirects
and raise the store's own error (a store asking to slow down, StoreBusy, gets botocore's
call with its backoff at once). A refusal only the SDK gets past, a GET that timed out, or
``MAX_FAILURES`` transport failures (or answers without their length) in a row switch
these GETs off for the run.

A restore's PUTs of objects up to ``max_size`` bytes go the same way when the runtime sends
their headers as botocore does (s3source.sendable: token names, printable ASCII values
without spaces around them), signed with the SHA-256 the snapshot recorded as the
payload hash (nothing is hashed again, and a store that checks signatures refuses other
bytes), with the same Content-MD5 and x-amz-checksum-sha256 as the signed request. Client
CPU per PUT of 50 KB on SeaweedFS (32 in flight, 2,000 PUTs, two rounds): 247-255 µs here
against 578-650 µs signed by lifeboat on botocore's transport. Any answer but a 2xx gives
None and the signed request follows, which raises the store's own error; a redirect or a
refusal of the store's own auth switches the runtime off, as for GETs.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from awscrt import auth, http, io, s3
from awscrt.exceptions import AwsCrtError
from botocore.credentials import RefreshableCredentials
from botocore.httpsession import get_cert_path

from lifeboat.assets.objects.signed_requests import SDK_ONLY_STATUSES, USER_AGENT, StoreBusy, busy

MAX_FAILURES = 8  # transport failures in a row after which botocore's transport serves alone
# how the runtime reports a 503 SlowDown and a 500 (its own retries are off): StoreBusy
BUSY_ERRORS = frozenset({"AWS_ERROR_S3_SLOW_DOWN", "AWS_ERROR_S3_INTERNAL_ERROR"})


@dataclass(frozen=True)
class Fetched:
    """A successful GET: the answer's headers (names lower-cased) and its whole body."""

    headers: dict[str, str]
    body: bytes


class _Switch:
    """Whether the runtime's requests are still made this run, and the failures in a row. Held
    apart from NativeRequests: the credentials callback turns it off, and a reference from the
    runtime's side to NativeRequests itself would keep both alive in a cycle."""

    def __init__(self) -> None:
        self.on = True
        self.failures = 0

    def off(self) -> None:
        self.on = False

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= MAX_FAILURES:
            self.on = False


class _ThreadStates:
    """Keeps an interpreter thread state on each of the runtime's event-loop threads once
    it has called back. The runtime's threads have none of their own: each callback made
    one and deleted it again, and with it the 16 KiB frame stack CPython maps for a thread
    state, three maps and unmaps per GET (59,000 in a 20,000-object bucket backup, each
    unmap stopping both cores to flush their TLBs). A PyGILState_Ensure that is never
    released keeps the state for the thread's life (about 20 KiB a thread with its frame
    stack; the threads of a NativeRequests dropped before the interpreter ends leave theirs,
    one set per S3 source, freed with the interpreter); the runtime's own Ensure and
    Release around each callback then find it. Bucket backup of the bench's 20,000
    objects: 17.3-18.7 s of client CPU against 19.5-19.8 s, 4.4-4.8 s of it system
    against 5.7."""

    def __init__(self) -> None:
        self._kept: set[int] = set()  # thread idents; added to under the interpreter lock

    def keep(self) -> None:
        """Called back on a runtime thread (holding the interpreter lock)."""
        ident = threading.get_ident()
        if ident not in self._kept:
            ctypes.pythonapi.PyGILState_Ensure()
            self._kept.add(ident)


class _Answer:
    """What the runtime's threads hand over for one request (at its end: see the docstring)."""

    def __init__(self, threads: _ThreadStates) -> None:
        self._threads = threads
        self.status = 0
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []
        self.cut_short = False  # a body of another length than its Content-Length (or none)

    def on_headers(self, status_code: int, headers: list[tuple[str, str]], **_: Any) -> None:
        self._threads.keep()
        self.status = status_code
        # the runtime decodes a header as UTF-8, botocore (http.client) as ISO-8859-1: the
        # same bytes read as botocore reads them, so that both ways record the same
        # metadata (a value that is not UTF-8 never gets here: see _quiet_undecodable)
        self.headers = {name.lower(): value.encode().decode("latin-1") for name, value in headers}

    def on_body(self, chunk: bytes, **_: Any) -> None:
        self._threads.keep()  # the headers and the body come on different threads
        self.parts.append(bytes(chunk))

    def whole(self, max_size: int) -> Fetched | None:
        """The object, when the answer holds all of it: a 206 whose Content-Range ends at
        the object's end, or a 200 (a store that ignores Range) of at most ``max_size``."""
        body = b"".join(self.parts)
        if str(len(body)) != self.headers.get("content-length"):
            self.cut_short = True
            return None
        if self.status == 206:
            total = self.headers.get("content-range", "").rpartition("/")[2]
            if total != str(len(body)):
                return None  # larger than asked for (or of unknown size): streamed instead
            headers = {k: v for k, v in self.headers.items() if k != "content-range"}
            return Fetched(headers, body)
        return Fetched(self.headers, body) if self.status == 200 and len(body) <= max_size else None


class NativeRequests:
    """GETs and PUTs of one bucket's small objects (``get``, ``put``), for an objects
    source's transfer threads."""

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
        self.max_size = max_size
        self._host = parts.netloc
        self._path_head = parts.path
        self._stall = stall_timeout
        self._switch = _Switch()
        self._threads = _ThreadStates()
        _install_quiet_hook()
        loops = io.EventLoopGroup()  # a thread per core
        bootstrap = io.ClientBootstrap(loops, io.DefaultHostResolver(loops))
        tls: dict[str, Any] = {"tls_mode": s3.S3RequestTlsMode.DISABLED}
        if parts.scheme == "https":
            options = io.TlsContextOptions()
            if verify is False:
                options.verify_peer = False
            else:  # the bundle botocore verifies with: the asset's, else certifi's, never the system's
                options.override_default_trust_store_from_path(
                    ca_filepath=verify if isinstance(verify, str) else get_cert_path(True)
                )
            tls = {
                "tls_mode": s3.S3RequestTlsMode.ENABLED,
                "tls_connection_options": io.ClientTlsContext(options).new_connection_options(),
            }
        credential_provider = _provider(credentials, self._switch.off)
        # S3's signing: the path as sent (quoted once, not normalised), which a PUT's own
        # config must keep (AwsSigningConfig's defaults quote it twice: S3 refuses that)
        self._signing = s3.create_default_s3_signing_config(
            region=region, credential_provider=credential_provider
        )
        self._client = s3.S3Client(
            bootstrap=bootstrap,
            region=region,
            signing_config=self._signing,
            # retries are the caller's (the signed request, then botocore's own attempts)
            retry_config=s3.S3RetryConfig(retry_mode=s3.S3RetryMode.NONE),
            max_active_connections_override=connections,
            connect_timeout_ms=max(1, int(stall_timeout * 1000)),
            **tls,
        )

    @property
    def enabled(self) -> bool:
        """Whether these requests are still made this run."""
        return self._switch.on

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
    ) -> NativeRequests | None:
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
        with its ``?versionId=``), or None when the caller should ask it another way."""
        answer = _Answer(self._threads)
        headers = http.HttpHeaders(
            [("Host", self._host), ("User-Agent", USER_AGENT), ("Range", f"bytes=0-{self.max_size - 1}")]
        )
        try:
            request = self._client.make_request(
                type=s3.S3RequestType.DEFAULT,
                operation_name="GetObject",
                request=http.HttpRequest("GET", self._path_head + quoted_path, headers),
                on_headers=answer.on_headers,
                on_body=answer.on_body,
            )
            request.finished_future.result(timeout=self._stall)
        except TimeoutError:  # slow or stalled: botocore's transport checks each read
            request.cancel()
            self._switch.off()
            return None
        except s3.S3ResponseError as refused:
            if busy(refused.status_code) or refused.name in BUSY_ERRORS:
                raise StoreBusy from None
            if refused.status_code in SDK_ONLY_STATUSES:
                self._switch.off()
            return None
        except AwsCrtError as failed:  # refused, dropped or not even sent: the caller's request follows
            if failed.name in BUSY_ERRORS:
                raise StoreBusy from None
            self._switch.failed()
            return None
        fetched = answer.whole(self.max_size)
        if fetched is None and answer.cut_short:
            self._switch.failed()  # a store whose answers never carry their length: not asked again
        else:
            self._switch.failures = 0
        return fetched

    def put(
        self, quoted_path: str, body: bytes, headers: dict[str, str], sha256: str
    ) -> dict[str, str] | None:
        """``body`` stored at ``quoted_path`` with ``headers`` (s3source.sendable), signed with
        ``sha256`` as its payload hash: a store that checks signatures refuses a body of
        another hash. The answer's headers (names lower-cased); None when the caller should
        send it another way (its signed request, which raises the store's own error). An
        answer lost after the store took the object (a timeout, a dropped connection) makes
        the signed request store it again: the same bytes and headers, one more version in
        a versioned bucket, as a retry of botocore's own would."""
        answer = _Answer(self._threads)
        sent = http.HttpHeaders(
            [
                ("Host", self._host),
                ("User-Agent", USER_AGENT),
                ("Content-Length", str(len(body))),
                *headers.items(),
            ]
        )
        signing = self._signing.replace(signed_body_value=sha256)
        try:
            request = self._client.make_request(
                type=s3.S3RequestType.DEFAULT,
                operation_name="PutObject",
                request=http.HttpRequest("PUT", self._path_head + quoted_path, sent, BytesIO(body)),
                signing_config=signing,
                on_headers=answer.on_headers,
                on_body=answer.on_body,
            )
            request.finished_future.result(timeout=self._stall)
        except TimeoutError:  # the signed request follows, with botocore's stall checks
            request.cancel()
            self._switch.off()
            return None
        except s3.S3ResponseError as refused:
            if busy(refused.status_code) or refused.name in BUSY_ERRORS:  # a 200 with an error
                raise StoreBusy from None
            # a redirect or the store's own auth: not asked again; another refusal may be
            # this object's alone (a tag the store refuses), the signed request says which
            if refused.status_code in SDK_ONLY_STATUSES - {400}:
                self._switch.off()
            else:
                self._switch.failed()
            return None
        except AwsCrtError as failed:
            if failed.name in BUSY_ERRORS:
                raise StoreBusy from None
            self._switch.failed()
            return None
        self._switch.failures = 0
        return answer.headers if 200 <= answer.status < 300 else None


def _provider(credentials: Any, failed: Callable[[], None]) -> auth.AwsCredentialsProvider:
    """The runtime's view of botocore's credentials: fixed ones once, refreshable ones (a
    role, SSO) asked of botocore at each signing, so that botocore refreshes them. A
    refresh that fails calls ``failed`` and gives placeholder credentials, which the store
    refuses: the runtime would print the exception (it may quote a credential process's
    output), and botocore's own request, made instead, raises it as one line."""
    if not isinstance(credentials, RefreshableCredentials):
        frozen = credentials.get_frozen_credentials()
        return auth.AwsCredentialsProvider.new_static(frozen.access_key, frozen.secret_key, frozen.token)

    def current() -> auth.AwsCredentials:
        try:
            frozen = credentials.get_frozen_credentials()  # thread-safe: botocore locks its refresh
        except Exception:  # any failure of botocore's refresh: see above
            frozen = None
        if frozen is None:
            failed()
            return auth.AwsCredentials("refresh-failed", "refresh-failed")
        return auth.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    return auth.AwsCredentialsProvider.new_delegate(current)


def _install_quiet_hook() -> None:
    if not getattr(sys.unraisablehook, "_lifeboat_native_requests", False):
        sys.unraisablehook = _quiet_undecodable(sys.unraisablehook)


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

    hook._lifeboat_native_requests = True  # type: ignore[attr-defined]
    return hook
