"""`lifeboat policy init`: detect what is there and write a commented starter policy that
passes `lifeboat policy check`."""

from __future__ import annotations

import json
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from lifeboat.errors import ConfigError, LifeboatError

MODES = ("production", "staging", "development")
PG_SETTINGS = ["data_directory", "archive_mode", "archive_command", "archive_timeout", "wal_level"]
DB_ASSET = "maindb"
KEYS_ASSET = "platform-keys"
DEFAULT_LOCK_DAYS = 35  # the critical class's min_days: nothing younger may be pruned anyway


@dataclass
class PgFacts:
    dsn: str
    pgdata: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class BucketFacts:
    url: str
    endpoint_url: str | None = None
    versioning: str = "unknown"
    object_lock: bool = False
    lock_days: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Starter:
    mode: str
    postgres: PgFacts | None = None
    bucket: BucketFacts | None = None
    keys: Path | None = None


def _toml(value: str) -> str:
    """A JSON string is a valid TOML basic string: paths and DSNs quoted safely."""
    return json.dumps(value)


def looks_like_dsn(target: str) -> bool:
    return "=" in target or "://" in target


def detect_postgres(target: str) -> PgFacts:
    """A DSN: connect and read the data directory and archive settings. A PGDATA: read
    postmaster.pid for the socket and port of the running server, then do the same."""
    if looks_like_dsn(target):
        facts = PgFacts(dsn=target)
    else:
        facts = _from_pgdata(Path(target).absolute())
    try:
        from lifeboat.assets.postgres.configure import current_settings

        facts.settings = current_settings(facts.dsn, PG_SETTINGS)
    except LifeboatError as exc:
        if looks_like_dsn(target):
            raise
        facts.notes.append(f"server not running or not reachable ({exc.message}): settings not read")
        return facts
    if facts.settings.get("data_directory"):
        facts.pgdata = Path(facts.settings["data_directory"])
    elif facts.pgdata is None:
        facts.notes.append("data_directory is hidden from this role (needs pg_read_all_settings)")
    facts.notes += _archive_notes(facts.settings)
    return facts


def _from_pgdata(pgdata: Path) -> PgFacts:
    if not (pgdata / "PG_VERSION").is_file():
        raise ConfigError(
            f"{pgdata} is not a PostgreSQL data directory (no PG_VERSION)",
            hint="pass the cluster's PGDATA or a connection string (host=... port=...)",
        )
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    pid = pgdata / "postmaster.pid"
    try:
        lines = pid.read_text().splitlines()
        port, socket_dir = lines[3].strip(), lines[4].strip() or "/var/run/postgresql"
    except (OSError, IndexError):
        facts = PgFacts(dsn=f"host=/var/run/postgresql port=5432 dbname=postgres user={owner}", pgdata=pgdata)
        facts.notes.append("server not running: the dsn is a guess (host=/var/run/postgresql port=5432)")
        return facts
    from psycopg.conninfo import make_conninfo

    dsn = make_conninfo(host=socket_dir, port=port, dbname="postgres", user=owner)
    return PgFacts(dsn=dsn, pgdata=pgdata)


def _archive_notes(settings: dict[str, str]) -> list[str]:
    notes = []
    if settings.get("archive_mode") not in ("on", "always"):
        notes.append("archive_mode is off: WAL is not archived yet ('pg configure --apply' turns it on)")
    elif "lifeboat" not in settings.get("archive_command", ""):
        notes.append("archive_command does not call lifeboat yet ('pg configure --apply' sets it)")
    if settings.get("wal_level") == "minimal":
        notes.append("wal_level is minimal: point-in-time recovery needs replica")
    return notes


def detect_bucket(url: str, endpoint_url: str | None) -> BucketFacts:
    """Versioning and Object Lock of the repository's bucket (it may not exist yet)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from lifeboat.storage.credentials import s3_client

    if not url.startswith("s3://") or not url.removeprefix("s3://").strip("/"):
        raise ConfigError(f"bad bucket {url!r}", hint="give it as s3://bucket or s3://bucket/prefix")
    bucket = url.removeprefix("s3://").split("/", 1)[0]
    facts = BucketFacts(url=url.rstrip("/"), endpoint_url=endpoint_url)
    client = s3_client(boto3.session.Session(), endpoint_url)
    try:
        facts.versioning = client.get_bucket_versioning(Bucket=bucket).get("Status", "Disabled")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404"):
            facts.notes.append(f"bucket {bucket} does not exist yet: create it with Object Lock enabled")
            return facts
        raise ConfigError(f"cannot read bucket {bucket}: {code or exc}") from None
    except BotoCoreError as exc:
        raise ConfigError(f"cannot reach {endpoint_url or 'AWS S3'}: {exc}") from None
    try:
        conf = client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
    except ClientError:
        conf = {}
    facts.object_lock = conf.get("ObjectLockEnabled") == "Enabled"
    if facts.object_lock:
        days = conf.get("Rule", {}).get("DefaultRetention", {}).get("Days")
        facts.lock_days = int(days) if days else DEFAULT_LOCK_DAYS
    elif facts.versioning != "Enabled":
        facts.notes.append(
            f"bucket {bucket} has neither versioning nor Object Lock: a stolen credential can "
            "overwrite the backups; prefer a bucket created with Object Lock"
        )
    else:
        facts.notes.append(f"bucket {bucket} is versioned but has no Object Lock: backups are not immutable")
    return facts


def render(starter: Starter) -> str:
    """The policy text: every section commented with why its values are what they are."""
    parts = [_header(starter), _repository(starter.bucket), _classes(starter.mode)]
    if starter.postgres is not None:
        parts.append(_postgres(starter.postgres))
    if starter.keys is not None:
        parts.append(_keys(starter.keys))
    parts.append(_objects_example())
    parts.append(_escrow_and_drills(starter))
    return "\n".join(parts)


def _header(starter: Starter) -> str:
    return (
        "# lifeboat policy, written by `lifeboat policy init`. Check it with `lifeboat policy check`\n"
        "# (exit 0: every target can be met); reference: README.md, docs/design/policy.md.\n\n"
        "[deployment]\n"
        "# production: unreachable paths and buckets are errors; staging/development: warnings\n"
        f"mode = {_toml(starter.mode)}\n"
    )


def _repository(bucket: BucketFacts | None) -> str:
    text = "\n[repository]\n"
    if bucket is None:
        text += (
            "# A local directory; for a real deployment prefer a bucket in another account or\n"
            "# region, created with Object Lock (`policy init --bucket s3://...`).\n"
            'url = "file:///var/lib/lifeboat/repository"\n'
        )
    else:
        lock = "on" if bucket.object_lock else "off"
        text += f"# detected: versioning {bucket.versioning}, Object Lock {lock}\n"
        text += f"url = {_toml(bucket.url)}\n"
        if bucket.endpoint_url:
            text += f"endpoint_url = {_toml(bucket.endpoint_url)}\n"
            if bucket.endpoint_url.lower().startswith("http://"):
                text += (
                    "# plain http: credentials and data travel unencrypted; acceptable for a\n"
                    "# loopback test server only (policy check warns every time)\n"
                    "allow_insecure_http = true\n"
                )
        if bucket.lock_days:
            text += (
                "# every object stays immutable this long: ransomware holding the backup key cannot\n"
                "# delete or overwrite a backup younger than this\n"
                f"lock_days = {bucket.lock_days}\n"
            )
    return text + (
        "# write-only: a host holding it can back up but never read or delete backups\n"
        'keyfile = "keys/backup.key"\n'
    )


def _classes(mode: str) -> str:
    keep = "daily = 7, weekly = 4, monthly = 12, min_days = 35"
    if mode != "production":
        keep = "daily = 7, weekly = 4, monthly = 0"
    return (
        "\n# Data classes: the targets an asset inherits.\n"
        "[classes.critical]\n"
        "# WAL archiving (archive_timeout derived from this) bounds the data an outage loses\n"
        'rpo = "5m"\n'
        'rto = "1h"\n'
        f"retention = {{ {keep} }}\n"
        'drill_every = "30d"\n'
        "\n[classes.keys]\n"
        "# key material changes when someone rotates a key: a daily backup meets a 1d RPO\n"
        'rpo = "1d"\n'
        'rto = "1h"\n'
        f"retention = {{ {keep} }}\n"
    )


def _postgres(pg: PgFacts) -> str:
    detected = ", ".join(f"{k} {v!r}" for k, v in pg.settings.items() if k != "data_directory")
    text = f"\n[assets.{DB_ASSET}]\n"
    if detected:
        text += f"# detected: {detected}\n"
    text += 'kind = "postgres"\nclass = "critical"\n'
    if pg.pgdata is not None:
        text += f"pgdata = {_toml(str(pg.pgdata))}\n"
    text += (
        f"dsn = {_toml(pg.dsn)}\n"
        "# the base backup, nightly inside the off-peak window; WAL is archived continuously\n"
        'schedule = "0 2 * * *"\n'
        'window = "01:00-05:00"\n'
        "# SQL checks every drill runs on the restored copy (in the dsn's database), e.g.\n"
        '# checks = [ { name = "orders present", sql = "select count(*) > 0 from orders", expect = "t" } ]\n'
    )
    return text


def _keys(keys: Path) -> str:
    return (
        f"\n[assets.{KEYS_ASSET}]\n"
        'kind = "keys"\nclass = "keys"\n'
        f"paths = [{_toml(str(keys))}]\n"
        'schedule = "30 3 * * *"\n'
    )


def _objects_example() -> str:
    return (
        "\n# A bucket of media or uploads (versioned: `lifeboat objects inspect NAME --fix`):\n"
        "# [assets.media]\n"
        '# kind = "objects"\n# class = "critical"\n# source = "s3://media"\n# schedule = "0 * * * *"\n'
    )


def _escrow_and_drills(starter: Starter) -> str:
    assets = [name for name, on in ((DB_ASSET, starter.postgres), (KEYS_ASSET, starter.keys)) if on]
    text = (
        "\n[escrow]\n"
        "# the recovery key is split among these people; any `threshold` of them can restore.\n"
        "# Replace the names with yours before `lifeboat init --shares-out DIR`.\n"
        "threshold = 2\n"
        'custodians = ["custodian-1", "custodian-2", "custodian-3"]\n'
    )
    if assets:
        listed = ", ".join(_toml(a) for a in assets)
        text += (
            "\n# A monthly drill restores everything into staging and measures RPO and RTO.\n"
            "[drills.full-outage]\n"
            'scenario = "full-outage"\n'
            f"assets = [{listed}]\n"
            'every = "30d"\n'
            'evidence_dir = "evidence"\n'
        )
    return text


def next_commands(config: Path, starter: Starter) -> list[str]:
    prefix = f"lifeboat --config {config}"
    second = (
        f"{prefix} pg configure {DB_ASSET} --apply"
        if starter.postgres is not None
        else f"{prefix} policy check"
    )
    return [f"{prefix} init --shares-out shares/", second, f"{prefix} backup"]


def write_new(path: Path, text: str) -> None:
    """Never overwrite: an existing policy is somebody's work."""
    try:
        with open(path, "x") as fh:
            fh.write(text)
    except FileExistsError:
        raise ConfigError(
            f"{path} already exists: not overwriting it", hint="pass --out NEW_FILE, or move it away"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    os.chmod(path, 0o640)
