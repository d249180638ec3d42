"""Fixtures every test folder may use.

* ``s3_server`` (session): moto's standalone S3 server on 127.0.0.1 over real HTTP; the
  endpoint URL. Dummy AWS credentials are set in the environment for the session.
* ``make_bucket(name=None, object_lock=True, versioning=True) -> str``: a fresh bucket.
* ``seaweed`` (session): a SeaweedFS ``weed mini`` server (bench/seaweed.py) on 127.0.0.1,
  a second real S3 endpoint that enforces what moto does not (conditional PUTs, Object Lock,
  signatures). Its ``admin`` identity holds the session's AWS credentials from the
  environment; ``backup`` is a restricted identity (``seaweed.identity("backup")``).
* ``make_seaweed_bucket(name=None, object_lock=True) -> str``: a fresh bucket on it.
* ``storage_backend``: a fresh repository Storage, parametrized over ``file``, ``s3``
  (moto) and ``seaweed``.
* ``clock``: the test's controlled clock (tests/harness/clock.py); give it to a
  ``LifeboatCli`` and shift it instead of sleeping.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
import pytest
from bench.seaweed import ADMIN, BACKUP, SeaweedServer
from moto.server import ThreadedMotoServer

from lifeboat.storage import open_storage
from lifeboat.storage.base import Storage
from tests.harness import Clock
from tests.harness.wait import wait_until

if TYPE_CHECKING:
    from tests.pgsandbox import PgSandbox

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

# Every lifeboat process the tests start (the CLI, archive_command as the postgres user, the
# daemon's children) appends here when it hits an internal error (exit 70); see the
# autouse fixture below. World-writable because the postgres user's processes write too.
INTERNAL_ERRORS = Path(tempfile.mkdtemp(prefix="lifeboat-internal-")) / "errors.log"
INTERNAL_ERRORS.touch()
os.chmod(INTERNAL_ERRORS.parent, 0o777)
os.chmod(INTERNAL_ERRORS, 0o666)
os.environ["LIFEBOAT_INTERNAL_ERROR_LOG"] = str(INTERNAL_ERRORS)
atexit.register(shutil.rmtree, INTERNAL_ERRORS.parent, True)

# The lists of modules each verb reads ahead (lifeboat/cli/import_readahead.py) go to a
# cache of the session's own, not the home of the user the suite runs as.
IMPORT_CACHE = Path(tempfile.mkdtemp(prefix="lifeboat-cache-"))
os.environ["XDG_CACHE_HOME"] = str(IMPORT_CACHE)
atexit.register(shutil.rmtree, IMPORT_CACHE, True)


@pytest.fixture(autouse=True)
def no_internal_errors() -> Iterator[None]:
    """No test, whatever it expects to fail, may see lifeboat crash with an internal error."""
    before = INTERNAL_ERRORS.stat().st_size
    yield
    with INTERNAL_ERRORS.open() as fh:
        fh.seek(before)
        new = fh.read().strip()
    if new:
        pytest.fail(f"a lifeboat process hit an internal error during this test: {new}", pytrace=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pg() -> Iterator[PgSandbox]:
    """A real PostgreSQL cluster with lifeboat set up for it (tests/pgsandbox.py)."""
    from tests.pgsandbox import destroy, make_sandbox

    sandbox = make_sandbox()
    yield sandbox
    destroy(sandbox)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def make_bucket(s3_server: str) -> Callable[..., str]:
    client = boto3.client("s3", endpoint_url=s3_server)

    def make(name: str | None = None, object_lock: bool = True, versioning: bool = True) -> str:
        bucket = name or f"lb-{secrets.token_hex(6)}"
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock)
        if versioning and not object_lock:
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        return bucket

    return make


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    # the admin identity uses the environment's credentials, so lifeboat's default AWS
    # chain works against both endpoints
    admin = type(ADMIN)(
        "admin", os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], ADMIN.actions
    )
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), identities=(admin, BACKUP))
    with server:
        yield server


@pytest.fixture
def make_seaweed_bucket(seaweed: SeaweedServer) -> Callable[..., str]:
    client = boto3.client("s3", endpoint_url=seaweed.endpoint)

    def make(name: str | None = None, object_lock: bool = True) -> str:
        bucket = name or f"lb-{secrets.token_hex(6)}"
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock)
        if not object_lock:
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        wait_until(lambda: _accepts_a_write(client, bucket), f"SeaweedFS bucket {bucket} to take a write")
        return bucket

    return make


def _accepts_a_write(client: Any, bucket: str) -> bool:
    """SeaweedFS grows a new bucket's first volume on its first write; on a loaded machine
    that write can fail with InternalError for longer than a client's retries last. A
    test's bucket is handed over only once it took (and lost) a probe outside the prefixes
    tests use, so no test depends on how fast the server grew its volume."""
    try:
        put = client.put_object(Bucket=bucket, Key="fixture-probe", Body=b"probe")
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "InternalError":
            return False
        raise
    client.delete_object(Bucket=bucket, Key="fixture-probe", VersionId=put["VersionId"])
    return True


def open_backend(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Storage:
    """A fresh repository store of one kind: a directory, moto (``s3``) or SeaweedFS."""
    if kind == "file":
        return open_storage(f"file://{tmp_path / 'repo'}")
    if kind == "seaweed":
        endpoint = request.getfixturevalue("seaweed").endpoint
        bucket = request.getfixturevalue("make_seaweed_bucket")(object_lock=False)
        return open_storage(f"s3://{bucket}/repo", endpoint_url=endpoint)
    endpoint = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("make_bucket")()
    return open_storage(f"s3://{bucket}/repo", endpoint_url=endpoint)


@pytest.fixture(params=["file", "s3", "seaweed"])
def storage_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    storage = open_backend(request, request.param, tmp_path)
    yield storage
    storage.close()
