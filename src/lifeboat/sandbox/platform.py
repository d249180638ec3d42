"""The sandbox platform: a PostgreSQL media-app database, a versioned media bucket on a
local S3 endpoint, a directory of key material, and a policy protecting all three."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg

from lifeboat.assets.postgres.cluster import PgCluster, free_port

Step = Callable[[str], None]

POLICY = """\
# Written by `lifeboat demo`: a sandbox platform on this machine. It passes its own
# `lifeboat policy check`: a starting point to copy (or run `lifeboat policy init`).
[repository]
url = "file://{root}/repository"
keyfile = "keys/backup.key"

[deployment]
mode = "production"

[classes.critical]
rpo = "5m"
rto = "10m"
retention = {{ daily = 7, weekly = 4, monthly = 12, min_days = 35 }}

[classes.important]
rpo = "1h"
rto = "15m"
retention = {{ daily = 7, weekly = 4, monthly = 6 }}

# Key material changes when someone rotates a key, not every minute: a daily backup meets a
# one-day RPO, and the keys are needed back within the database's RTO.
[classes.keys]
rpo = "1d"
rto = "10m"
retention = {{ daily = 7, weekly = 4, monthly = 12, min_days = 35 }}

[assets.maindb]
kind = "postgres"
class = "critical"
pgdata = "{root}/platform/pgdata"
dsn = "{dsn}"
schedule = "0 2 * * *"
window = "01:00-05:00"
checks = [
  {{ name = "users present", sql = "select count(*) > 0 from users", expect = "t" }},
  {{ name = "attachments reference messages", expect = "0", sql = '''select count(*) from attachments a
     left join messages m on m.id = a.message_id where m.id is null''' }},
]

[assets.media]
kind = "objects"
class = "important"
source = "s3://media/"
endpoint_url = "{endpoint}"
allow_insecure_http = true
schedule = "0 * * * *"

[assets.platform-keys]
kind = "keys"
class = "keys"
paths = ["{root}/platform/keys"]
schedule = "0 3 * * *"

[escrow]
threshold = 2
custodians = ["alice", "bob", "carol"]

[drills.full-outage]
scenario = "full-outage"
assets = ["maindb", "media", "platform-keys"]
every = "30d"
evidence_dir = "evidence"

[[drills.full-outage.cross_checks]]
database = "maindb"
objects = "media"
query = "select object_key, sha256 from attachments"

[drills.db-pitr]
scenario = "pg-pitr"
assets = ["maindb"]
evidence_dir = "evidence"

[drills.media-rollback]
scenario = "objects-restore"
assets = ["media"]
evidence_dir = "evidence"

[drills.keys-recovery]
scenario = "keys-recovery"
assets = ["platform-keys"]
evidence_dir = "evidence"
"""

SCHEMA = """
create table users (id serial primary key, name text not null, created timestamptz default now());
create table messages (id bigserial primary key, user_id int references users, body text not null,
                       sent timestamptz default now());
create table attachments (id bigserial primary key, message_id bigint not null, object_key text not null,
                          sha256 text not null);
"""


@dataclass
class Platform:
    root: Path
    policy: Path
    cluster: PgCluster
    endpoint: str
    bucket: str = "media"

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.cluster.dsn, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    @property
    def s3(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint)

    @property
    def keys_dir(self) -> Path:
        return self.root / "platform" / "keys"


def _media_bytes(rng: random.Random, size: int) -> bytes:
    """JPEG-like: a small header, then incompressible bytes (media is already compressed)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(max(size - 11, 0))


def upload_attachment(p: Platform, rng: random.Random, user: int, body: str) -> None:
    key = f"u{user}/{rng.getrandbits(48):012x}.jpg"
    data = _media_bytes(rng, int(rng.lognormvariate(10.5, 0.8)))
    p.s3.put_object(
        Bucket=p.bucket, Key=key, Body=data, ContentType="image/jpeg", Metadata={"user": str(user)}
    )
    with psycopg.connect(p.cluster.dsn, autocommit=True) as conn:
        msg = conn.execute("insert into messages (user_id, body) values (%s, %s) returning id", (user, body))
        row = msg.fetchone()
        assert row is not None
        conn.execute(
            "insert into attachments (message_id, object_key, sha256) values (%s, %s, %s)",
            (row[0], key, hashlib.sha256(data).hexdigest()),
        )


def make_key_material(keys: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.x509.oid import NameOID

    (keys / "tls").mkdir(parents=True)
    pem, pkcs8, none = (
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tls = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media.sandbox")])
    import datetime as dt

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(tls.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2026, 1, 1))
        .not_valid_after(dt.datetime(2028, 1, 1))
        .sign(tls, hashes.SHA256())
    )
    (keys / "tls" / "media.key").write_bytes(tls.private_bytes(pem, pkcs8, none))
    (keys / "tls" / "media.crt").write_bytes(cert.public_bytes(pem))
    (keys / "signing.key").write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(pem, pkcs8, none))
    (keys / "media-master.key").write_bytes(os.urandom(32).hex().encode())
    for path in keys.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


def build(root: Path, endpoint: str, step: Step) -> Platform:
    """Create the platform in the empty directory ``root`` (as the current user: the demo
    has dropped to `postgres` when started as root)."""
    (root / "platform").mkdir(parents=True)
    (root / "keys").mkdir()
    cluster = PgCluster(root / "platform" / "pgdata", free_port(), root / "platform" / "sock")
    policy = root / "lifeboat.toml"
    policy.write_text(POLICY.format(root=root, dsn=cluster.dsn, endpoint=endpoint))
    p = Platform(root, policy, cluster, endpoint)
    step(f"PostgreSQL cluster on port {cluster.port}, archiving WAL into the repository")
    archive = f"{sys.executable} -m lifeboat --config {policy} wal push --asset maindb %p"
    cluster.initdb(
        "wal_level = replica", "archive_mode = on", f"archive_command = '{archive}'", "archive_timeout = 60"
    )
    cluster.start()
    p.sql(SCHEMA)
    p.sql("insert into users (name) select 'user ' || g from generate_series(1, 50) g")
    step("versioned media bucket on the local S3 endpoint, key material directory")
    p.s3.create_bucket(Bucket=p.bucket)
    p.s3.put_bucket_versioning(Bucket=p.bucket, VersioningConfiguration={"Status": "Enabled"})
    rng = random.Random(1)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: upload_attachment(p, random.Random(i), 1 + i % 50, f"hello {i}"), range(300)))
    make_key_material(p.keys_dir)
    del rng
    return p


def traffic(p: Platform, seconds: float, step: Step) -> int:
    step(f"generating {seconds:.0f}s of traffic: messages with attachments")
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        upload_attachment(p, random.Random(10_000 + n), 1 + n % 50, f"traffic {n}")
        n += 1
    return n


def outage(p: Platform, step: Step) -> dict[str, int]:
    """The disaster: database destroyed, bucket half encrypted and a quarter deleted, keys gone."""
    step("OUTAGE: destroying the database cluster")
    p.cluster.stop("immediate")
    shutil.rmtree(p.cluster.datadir)
    step("OUTAGE: ransomware overwrites half the media bucket and deletes a quarter")
    keys = [
        o["Key"]
        for page in p.s3.get_paginator("list_objects_v2").paginate(Bucket=p.bucket)
        for o in page.get("Contents", [])
    ]
    rng = random.Random(666)
    overwritten = rng.sample(keys, len(keys) // 2)
    deleted = rng.sample(keys, len(keys) // 4)
    s3 = p.s3
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=p.bucket, Key=k, Body=os.urandom(256)), overwritten))
        list(pool.map(lambda k: s3.delete_object(Bucket=p.bucket, Key=k), deleted))
    step("OUTAGE: key material deleted from disk")
    shutil.rmtree(p.keys_dir)
    return {"objects": len(keys), "overwritten": len(overwritten), "deleted": len(deleted)}
