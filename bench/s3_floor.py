"""What the S3 endpoint itself allows: the requests a bucket backup or restore cannot avoid,
made by the thinnest client we know, with nothing done with the bytes. No tool can back up
a bucket faster than this endpoint lists and serves it.

    .venv/bin/python bench/s3_floor.py get ENDPOINT BUCKET [--only KEYFILE] [--workers 32]
                                           [--client crt|urllib3]
    .venv/bin/python bench/s3_floor.py put ENDPOINT BUCKET DIRECTORY [--workers 32]
                                           [--client crt|urllib3]

The thinnest client for GETs is the AWS Common Runtime's S3 client (awscrt, C), with
``--workers`` connections: lifeboat fetches a bucket's small objects through it too
(assets/objects/native_requests.py), and presigned URLs over urllib3 with ``--workers``
threads (``--client urllib3``, the floor before) took 1.7-2 times as long as it did on the
bench's 20,000 objects. PUTs go through the same runtime (lifeboat's small PUTs do too);
``--client urllib3`` gives the floor before, presigned URLs over urllib3.

``get`` lists the bucket and downloads every object (or, with ``--only``, the keys listed
in KEYFILE: what an incremental backup must fetch); ``put`` uploads every file under
DIRECTORY (keys are relative paths). bench/objects.py runs both as the "endpoint floor"
rows.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import urllib3
from botocore.config import Config


def _pool(endpoint: str, workers: int) -> urllib3.HTTPConnectionPool:
    url = urlsplit(endpoint)
    return urllib3.HTTPConnectionPool(url.hostname, url.port, maxsize=workers, block=True)


def _path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _run(fn: Callable[[str], None], keys: list[str], workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, keys):
            pass


def get_all(
    endpoint: str, bucket: str, workers: int, only: set[str] | None = None, client: str = "crt"
) -> int:
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
        if only is None or o["Key"] in only
    ]
    if client == "crt":
        _get_with_crt(s3, endpoint, bucket, keys, workers)
        return len(keys)
    http = _pool(endpoint, workers)

    def get(key: str) -> None:
        url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
        response = http.request("GET", _path(url), preload_content=False)
        for _ in response.stream(1 << 20):
            pass
        response.release_conn()
        if response.status != 200:
            raise SystemExit(f"GET {key}: HTTP {response.status}")

    _run(get, keys, workers)
    return len(keys)


class _Runtime:
    """The runtime's S3 client as lifeboat sets it up (assets/objects/native_requests.py): no
    retries of its own, ``connections`` connections, plain HTTP (the bench's SeaweedFS),
    its event-loop threads keeping their interpreter state; one request per connection in
    flight, each answer dropped as it arrives."""

    def __init__(self, s3: Any, endpoint: str, connections: int) -> None:
        from awscrt import auth, io
        from awscrt import s3 as crt_s3

        frozen = s3._request_signer._credentials.get_frozen_credentials()
        self.provider = auth.AwsCredentialsProvider.new_static(
            frozen.access_key, frozen.secret_key, frozen.token
        )
        self.region = s3.meta.region_name or "us-east-1"
        loops = io.EventLoopGroup()
        self.signing = crt_s3.create_default_s3_signing_config(
            region=self.region, credential_provider=self.provider
        )
        self.client = crt_s3.S3Client(
            bootstrap=io.ClientBootstrap(loops, io.DefaultHostResolver(loops)),
            region=self.region,
            signing_config=self.signing,
            tls_mode=crt_s3.S3RequestTlsMode.DISABLED,
            max_active_connections_override=connections,
            retry_config=crt_s3.S3RetryConfig(retry_mode=crt_s3.S3RetryMode.NONE),
        )
        self.host = urlsplit(endpoint).netloc
        self.connections = connections
        self._kept: set[int] = set()

    def keep_thread_state(self, **_: Any) -> None:
        # as lifeboat does (native_requests._ThreadStates): without it, each callback maps and
        # unmaps a thread state's frame stack, which the floor would pay and lifeboat not
        if threading.get_ident() not in self._kept:
            ctypes.pythonapi.PyGILState_Ensure()
            self._kept.add(threading.get_ident())

    def send(self, operation: str, request: Any, signing: Any = None) -> Any:
        from awscrt import s3 as crt_s3

        return self.client.make_request(
            type=crt_s3.S3RequestType.DEFAULT,
            operation_name=operation,
            request=request,
            signing_config=signing,
            on_headers=self.keep_thread_state,
            on_body=self.keep_thread_state,
        )

    def run(self, what: str, keys: list[str], send: Callable[[str], Any]) -> None:
        queued: deque[tuple[str, Any]] = deque()
        pending = iter(keys)
        for key in pending:
            queued.append((key, send(key)))
            if len(queued) >= self.connections:
                break
        while queued:
            key, request = queued.popleft()
            try:
                request.finished_future.result()
            except Exception as exc:
                raise SystemExit(f"{what} {key}: {exc}") from None
            nxt = next(pending, None)
            if nxt is not None:
                queued.append((nxt, send(nxt)))


def _get_with_crt(s3: Any, endpoint: str, bucket: str, keys: list[str], connections: int) -> None:
    """Every key fetched whole through the runtime. Thinner than lifeboat, which asks for a
    range of its first 256 KiB and GETs larger objects on botocore's transport."""
    from awscrt import http
    from botocore.utils import percent_encode

    runtime = _Runtime(s3, endpoint, connections)

    def send(key: str) -> Any:
        headers = http.HttpHeaders([("Host", runtime.host), ("User-Agent", "lifeboat-floor")])
        return runtime.send(
            "GetObject", http.HttpRequest("GET", f"/{bucket}/{percent_encode(key, safe='/~')}", headers)
        )

    runtime.run("GET", keys, send)


def _put_with_crt(
    s3: Any, endpoint: str, bucket: str, directory: Path, keys: list[str], connections: int
) -> None:
    """Every file stored through the runtime, its body unsigned (UNSIGNED-PAYLOAD: nothing
    hashed) and with no checksum. Thinner than lifeboat, which sends its Content-MD5 and
    SHA-256 and signs with the SHA-256 the snapshot recorded."""
    from awscrt import auth, http
    from botocore.utils import percent_encode

    runtime = _Runtime(s3, endpoint, connections)
    signing = runtime.signing.replace(signed_body_value=auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD)

    def send(key: str) -> Any:
        body = (directory / key).read_bytes()
        headers = http.HttpHeaders(
            [("Host", runtime.host), ("User-Agent", "lifeboat-floor"), ("Content-Length", str(len(body)))]
        )
        path = f"/{bucket}/{percent_encode(key, safe='/~')}"
        return runtime.send("PutObject", http.HttpRequest("PUT", path, headers, BytesIO(body)), signing)

    runtime.run("PUT", keys, send)


def put_all(endpoint: str, bucket: str, directory: Path, workers: int, client: str = "crt") -> int:
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
    keys = [
        str(Path(root, name).relative_to(directory))
        for root, _, names in os.walk(directory)
        for name in names
    ]
    if client == "crt":
        _put_with_crt(s3, endpoint, bucket, directory, keys, workers)
        return len(keys)
    http = _pool(endpoint, workers)

    def put(key: str) -> None:
        url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key})
        response = http.request("PUT", _path(url), body=(directory / key).read_bytes())
        if response.status != 200:
            raise SystemExit(f"PUT {key}: HTTP {response.status}")

    _run(put, keys, workers)
    return len(keys)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["get", "put"])
    parser.add_argument("endpoint")
    parser.add_argument("bucket")
    parser.add_argument("directory", nargs="?", type=Path)
    parser.add_argument("--only", type=Path, help="download only the keys in this file")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--client", choices=["crt", "urllib3"], default="crt")
    args = parser.parse_args()
    started = time.monotonic()
    if args.what == "get":
        only = set(args.only.read_text().splitlines()) if args.only else None
        n = get_all(args.endpoint, args.bucket, args.workers, only, args.client)
    else:
        n = put_all(args.endpoint, args.bucket, args.directory, args.workers, args.client)
    print(f"{args.what}: {n} objects in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
