"""What the S3 endpoint itself allows: the requests a bucket backup or restore cannot avoid,
made by the thinnest client we know, with nothing done with the bytes. No tool can back up
a bucket faster than this endpoint lists and serves it.

    .venv/bin/python bench/s3_floor.py get ENDPOINT BUCKET [--only KEYFILE] [--workers 32]
                                           [--client crt|urllib3]
    .venv/bin/python bench/s3_floor.py put ENDPOINT BUCKET DIRECTORY [--workers 32]

The thinnest client for GETs is the AWS Common Runtime's S3 client (awscrt, C), with
``--workers`` connections: lifeboat fetches a bucket's small objects through it too
(assets/objects/native_gets.py), and presigned URLs over urllib3 with ``--workers``
threads (``--client urllib3``, the floor before) took 1.7-2 times as long as it did on the
bench's 20,000 objects. PUTs are presigned URLs over urllib3.

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


def _get_with_crt(s3: Any, endpoint: str, bucket: str, keys: list[str], connections: int) -> None:
    """Every key fetched whole by the runtime's S3 client, with no retries of the runtime's
    own and one request per connection in flight, as lifeboat asks; each body dropped as it
    arrives. Thinner than lifeboat, which asks for a range of its first 256 KiB and GETs
    larger objects on botocore's transport. Plain HTTP: the bench's SeaweedFS."""
    from awscrt import auth, http, io
    from awscrt import s3 as crt_s3
    from botocore.utils import percent_encode

    frozen = s3._request_signer._credentials.get_frozen_credentials()
    provider = auth.AwsCredentialsProvider.new_static(frozen.access_key, frozen.secret_key, frozen.token)
    region = s3.meta.region_name or "us-east-1"
    loops = io.EventLoopGroup()
    client = crt_s3.S3Client(
        bootstrap=io.ClientBootstrap(loops, io.DefaultHostResolver(loops)),
        region=region,
        signing_config=crt_s3.create_default_s3_signing_config(region=region, credential_provider=provider),
        tls_mode=crt_s3.S3RequestTlsMode.DISABLED,
        max_active_connections_override=connections,
        retry_config=crt_s3.S3RetryConfig(retry_mode=crt_s3.S3RetryMode.NONE),
    )
    host = urlsplit(endpoint).netloc
    kept: set[int] = set()

    def keep_thread_state() -> None:
        # as lifeboat does (native_gets._ThreadStates): without it, each callback maps and
        # unmaps a thread state's frame stack, which the floor would pay and lifeboat not
        if threading.get_ident() not in kept:
            ctypes.pythonapi.PyGILState_Ensure()
            kept.add(threading.get_ident())

    queued: deque[tuple[str, Any]] = deque()
    pending = iter(keys)

    def send(key: str) -> Any:
        headers = http.HttpHeaders([("Host", host), ("User-Agent", "lifeboat-floor")])
        request = http.HttpRequest("GET", f"/{bucket}/{percent_encode(key, safe='/~')}", headers)
        return client.make_request(
            type=crt_s3.S3RequestType.DEFAULT,
            operation_name="GetObject",
            request=request,
            on_headers=lambda **_: keep_thread_state(),
            on_body=lambda chunk, **_: keep_thread_state(),
        )

    for key in pending:
        queued.append((key, send(key)))
        if len(queued) >= connections:
            break
    while queued:
        key, request = queued.popleft()
        try:
            request.finished_future.result()
        except Exception as exc:
            raise SystemExit(f"GET {key}: {exc}") from None
        nxt = next(pending, None)
        if nxt is not None:
            queued.append((nxt, send(nxt)))


def put_all(endpoint: str, bucket: str, directory: Path, workers: int) -> int:
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
    keys = [
        str(Path(root, name).relative_to(directory))
        for root, _, names in os.walk(directory)
        for name in names
    ]
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
    parser.add_argument("--client", choices=["crt", "urllib3"], default="crt", help="GETs' client")
    args = parser.parse_args()
    started = time.monotonic()
    if args.what == "get":
        only = set(args.only.read_text().splitlines()) if args.only else None
        n = get_all(args.endpoint, args.bucket, args.workers, only, args.client)
    else:
        n = put_all(args.endpoint, args.bucket, args.directory, args.workers)
    print(f"{args.what}: {n} objects in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
