"""The storage provider (issue #14): it holds every stored byte and no key. It reads no file
name, canary path, object key or asset name in snapshot headers and index files (they are
sealed, repo/sealed.py), no blob id or plaintext length in packs (their blob tables are
sealed for their writer and the recovery side), not what an audit copy records (sealed:
only the chain fields show), nor a WAL ref's chunk ids, size or labels; and an index file it
plants (unsigned, signed by a key the registry does not know, or by a revoked writer's
stolen key) is ignored by restore and named by `check` with exit 1. The defender is the
real `lifeboat` executable (the repository API for refs)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import boto3
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lifeboat.crypto.keys import load_backup_key
from lifeboat.repo import Repository
from lifeboat.repo.format import INDEX_MAGIC, encode_framed
from lifeboat.repo.index import encode_index
from lifeboat.repo.keyring import Keyring
from lifeboat.repo.sealed import MetadataCodec
from lifeboat.storage import open_storage
from tests.harness import Clock, LifeboatCli, PolicyBuilder
from tests.harness.packs import stored_blob_table

CANARY_DIR = "canary-7f3a9-payroll"
FILE_NAMES = ("salaries-2026-q3.csv", "board-minutes-confidential.txt")
OBJECT_KEYS = ("invoices/acme-corp-4711.pdf", "contracts/zeta-merger-draft.docx")
ASSETS = ("ledgerfiles", "mediabucket")
# a file of random bytes (so its one chunk is exactly this long) whose size would confirm it
SIZED_FILE, SECRET_SIZE = "export.bin", 7919
OPERATOR = "operator-canary-5521"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # who ran each command, as the audit log records it


def _site(tmp_path: Path, clock: Clock, endpoint: str, bucket: str) -> LifeboatCli:
    canary = tmp_path / "data" / CANARY_DIR
    canary.mkdir(parents=True)
    for name in FILE_NAMES:
        (canary / name).write_bytes(f"content of {name}\n".encode())
    (canary / SIZED_FILE).write_bytes(os.urandom(SECRET_SIZE))
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for key in OBJECT_KEYS:
        s3.put_object(Bucket=bucket, Key=f"media/{key}", Body=f"object {key}".encode())
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .data_class("standard", rpo="1d", rto="1h")
        .files(ASSETS[0], [tmp_path / "data"])
        .objects(ASSETS[1], f"s3://{bucket}/media", endpoint_url=endpoint)
        .write(tmp_path / "lifeboat.toml")
    )
    cli = LifeboatCli(policy=policy, clock=clock)
    cli.env["LIFEBOAT_ACTOR"] = OPERATOR
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    for asset in ASSETS:
        cli.run("backup", asset)
    return cli


def _stored(repo: Path, prefixes: tuple[str, ...] = ("",)) -> dict[str, bytes]:
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in repo.rglob("*")
        if p.is_file() and str(p.relative_to(repo)).startswith(prefixes)
    }


def _as_read(data: bytes) -> bytes:
    """The bytes as the provider reads them: every zstd frame in them decompressed too."""
    found = [data]
    start = data.find(ZSTD_MAGIC)
    while start != -1:
        try:
            found.append(zstandard.ZstdDecompressor().decompressobj().decompress(data[start:]))
        except zstandard.ZstdError:
            pass
        start = data.find(ZSTD_MAGIC, start + 1)
    return b"\n".join(found)


def test_storage_bytes_name_no_file_path_or_object_key(
    tmp_path: Path, clock: Clock, s3_server: str, make_bucket: Callable[..., str]
) -> None:
    cli = _site(tmp_path, clock, s3_server, make_bucket(object_lock=False))
    stored = _stored(tmp_path / "repo")
    assert any(n.startswith("snapshots/") for n in stored) and any(n.startswith("index/") for n in stored)
    secrets = [CANARY_DIR, *FILE_NAMES, *OBJECT_KEYS, *(k.rsplit("/", 1)[-1] for k in OBJECT_KEYS)]
    for name, data in stored.items():
        for secret in secrets:
            assert secret.encode() not in data, f"{secret!r} readable in {name}"
    # the asset names, in headers and index files (the registry names writers' scopes by design)
    for name, data in _stored(tmp_path / "repo", ("snapshots/", "index/")).items():
        for asset in ASSETS:
            assert asset.encode() not in data, f"{asset!r} readable in {name}"
        assert len(data) >= 512 + 192 + 101  # padded to the 512-byte floor, sealed, signed
    # audit copies: what happened, to which asset, on which host, by whom, is sealed
    copies = _stored(tmp_path / "repo", ("audit/",))
    assert len(copies) >= 3  # init and two backups
    # (the writer's name shows, as in the registry: by default it is the host's name)
    told = [*ASSETS, OPERATOR, '"operation"', '"backup"', '"details"']
    for name, data in copies.items():
        for word in told:
            assert word.encode() not in data, f"{word!r} readable in {name}"
    # ...while the key holders still read them: the writer its own, the recovery side all
    listed = cli.json("snapshots", "--asset", ASSETS[0])
    assert [s["asset"] for s in listed] == [ASSETS[0]]
    target = tmp_path / "restored"
    cli.run("restore", ASSETS[0], "--target", str(target), "--recovery-key", str(tmp_path / "recovery.key"))
    assert (target / ASSETS[0]).exists() or any(target.rglob(FILE_NAMES[0]))


def test_packs_show_no_blob_id_and_no_plaintext_length(
    tmp_path: Path, clock: Clock, s3_server: str, make_bucket: Callable[..., str]
) -> None:
    _site(tmp_path, clock, s3_server, make_bucket(object_lock=False))
    table = stored_blob_table(f"file://{tmp_path / 'repo'}", tmp_path / "recovery.key")
    assert SECRET_SIZE in {raw for *_, raw in table}  # the recovery side reads the tables
    stored = _stored(tmp_path / "repo", ("data/", "index/", "snapshots/"))
    for name, data in stored.items():
        assert b",%d]" % SECRET_SIZE not in data, f"the file's exact length is readable in {name}"
        for _, blob_id, *_ in table:
            assert blob_id.encode() not in data, f"blob {blob_id[:16]} is named in {name}"


def _forged_indexes(repo: Path, keyfile: Path, revoked_keyfile: Path) -> dict[str, str]:
    """Index files listing every stored blob in a pack that does not exist, each named so it
    sorts (and loads) before every genuine index file: unsigned, signed by an unknown key,
    signed by a revoked writer. Returns name -> who planted it."""
    key = load_backup_key(keyfile)
    mac = Keyring.for_backup(key).mac
    # every stored blob (read with the recovery key: the planter is handed more than it has)
    blobs = [list(b[1:]) for b in stored_blob_table(f"file://{repo}", repo.parent / "recovery.key")]
    entry = [{"id": "f" * 64, "blobs": blobs}]
    first = min(p.name for p in (repo / "index").iterdir())
    revoked = load_backup_key(revoked_keyfile)
    codecs = {
        "unknown key": MetadataCodec(
            key.repo_id, mac, signing=Ed25519PrivateKey.generate(), recovery_public=key.recovery_public
        ),
        "revoked writer": MetadataCodec(
            key.repo_id, mac, signing=revoked.signing, recovery_public=key.recovery_public
        ),
    }
    planted: dict[str, str] = {}
    for who in ("no key", *codecs):
        for nonce in range(10_000):
            if who == "no key":
                data = encode_framed(INDEX_MAGIC, {"version": 1, "packs": entry, "n": nonce}, mac)
                index_id = hashlib.sha256(data).hexdigest()
            else:
                index_id, data = encode_index(entry, codecs[who])
            if index_id < first:
                (repo / "index" / index_id).write_bytes(data)
                planted[index_id] = who
                break
    assert len(planted) == 3
    return planted


def test_a_planted_index_is_ignored_by_restore_and_named_by_check(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "config.txt").write_bytes(b"the genuine configuration\n")
    policy = (
        PolicyBuilder()
        .repository(f"file://{tmp_path / 'repo'}")
        .data_class("standard", rpo="1d", rto="1h")
        .files("app", [tmp_path / "data"])
        .write(tmp_path / "lifeboat.toml")
    )
    cli = LifeboatCli(policy=policy, clock=clock)
    recovery = ["--recovery-key", str(tmp_path / "recovery.key")]
    cli.run("init", "--recovery-key-out", str(tmp_path / "recovery.key"))
    cli.run("backup", "app")
    stolen = tmp_path / "stolen.key"
    cli.json("keys", "add-writer", "old-host", "--assets", "app", "--out", str(stolen), *recovery)
    cli.json("keys", "revoke-writer", "old-host", *recovery)
    clock.advance(60)
    planted = _forged_indexes(tmp_path / "repo", tmp_path / "keys" / "backup.key", stolen)

    target = tmp_path / "restored"
    cli.run("restore", "app", "--target", str(target), *recovery)
    assert next(target.rglob("config.txt")).read_bytes() == b"the genuine configuration\n"

    proc = cli.run("check", "--json", *recovery, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    problems = {
        p["object"]: p["message"] for p in json.loads(proc.stdout)["problems"] if p["kind"] == "refused-index"
    }
    assert set(problems) == {f"index/{i}" for i in planted}
    by_who = {planted[n.rsplit("/", 1)[-1]]: m for n, m in problems.items()}
    assert "unsigned" in by_who["no key"]
    assert "unknown writer" in by_who["unknown key"] and "writer not in the registry" in by_who["unknown key"]
    assert "old-host" in by_who["revoked writer"] and "writer revoked" in by_who["revoked writer"]


def test_wal_refs_show_no_chunk_id_size_or_label(tmp_path: Path) -> None:
    """A WAL ref shows its name, time and keyed digest (what every reader judges it by), not
    which chunks hold it, how long it is, or its labels (a history file's switch point)."""
    storage = open_storage(f"file://{tmp_path / 'repo'}")
    writer, _, recovery = Repository.create(storage, writer="db-1", cache_dir=tmp_path / "cache")
    segment = os.urandom(SECRET_SIZE)
    writer.put_ref("wal/db", "000000010000000000000001", segment, labels={"kind": "segment"})
    switch = "0/3A5F0C8"
    labels = {"kind": "history", "parent": "1", "switch_lsn": switch}
    writer.put_ref("wal/db", "00000002.history", f"1\t{switch}\tcanary\n".encode(), labels=labels)
    stored = _stored(tmp_path / "repo", ("refs/",))
    assert len(stored) == 2
    reader = Repository.open(storage, recovery_key=recovery)
    chunk_ids = [c for n in reader.list_ref_names("wal/db") for c in reader.get_ref("wal/db", n).chunks]
    assert len(chunk_ids) == 2
    # the length as a JSON value under any key or in a list (a bare "7919" also turns up by
    # chance in a hex digest or a timestamp's microseconds: one run in a few hundred)
    lengths = [f"{sep}{SECRET_SIZE}" for sep in (":", ",", "[")]
    told = [*chunk_ids, switch, "canary", '"kind"', '"size"', *lengths, '"chunks"', '"labels"']
    for name, data in stored.items():
        for word in told:
            assert word.encode() not in _as_read(data), f"{word!r} readable in {name}"
    assert reader.read_ref(reader.get_ref("wal/db", "000000010000000000000001")) == segment
