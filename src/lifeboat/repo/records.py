"""Names and layouts of the repository's plaintext records (``records/...``), in one place.

Records are small non-secret JSON documents beside the encrypted data: backup keys
(``keys/<id>.json``, ``keys/<id>.retired.json``), escrows (``escrow/<time>-<id>.json``), the
drill signing key (``drill-keys/<fingerprint>.json``, root-signed) and the recovery-key chain
(``recovery/``, in ``recovery_chain.py``). Callers outside ``repo/`` use these functions, never the names.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from lifeboat.errors import ConfigError, IntegrityError, NotFoundError
from lifeboat.repo.format import CONFIG_NAME, FORMAT_VERSION, record_name
from lifeboat.storage.base import Storage, list_names

if TYPE_CHECKING:
    from lifeboat.crypto.escrow import EscrowRecord
    from lifeboat.crypto.keys import BackupKey

KEYS = "keys/"
ESCROW = "escrow/"
DRILL_KEY = "drill-key.json"


class RecordSource(Protocol):
    """Where records are read from: an open repository or a keyless ``RecordsView``."""

    config: dict[str, Any]

    def get_record(self, name: str) -> dict[str, Any]:
        """The record ``name`` (NotFoundError when absent, IntegrityError when damaged)."""
        ...

    def list_records(self, prefix: str = "") -> list[str]:
        """Names of the records under ``prefix``, sorted."""
        ...


class RecordStore(RecordSource, Protocol):
    """A record source that also writes (an open repository)."""

    def put_record(self, name: str, data: dict[str, Any]) -> None:
        """Writes the record ``name`` (put-if-absent: an existing name raises)."""
        ...


def read_config(storage: Storage) -> dict[str, Any]:
    """The repository's plaintext config (id, public key, sizes); ConfigError without one,
    and for a repository from before signed writers (no ``root_public``)."""
    try:
        config = json.loads(storage.get(CONFIG_NAME))
    except NotFoundError:
        raise ConfigError(
            f"no lifeboat repository at {storage.url}", hint="create one with 'lifeboat init'"
        ) from None
    except ValueError:
        raise IntegrityError(f"repository config at {storage.url} is damaged") from None
    if config.get("version") != FORMAT_VERSION:
        raise ConfigError(f"repository format version {config.get('version')} is not supported")
    refuse_format_1(config)
    return dict(config)


def refuse_format_1(config: dict[str, Any]) -> None:
    """A repository written before signed writers (its config pins no root key): any
    backup key file could forge its history, so no command trusts it (ConfigError)."""
    if "root_public" not in config:
        raise ConfigError(
            "repository format 1 predates signed writers: its snapshots cannot be trusted",
            hint=FORMAT_1_HINT,
        )


FORMAT_1_HINT = (
    "restore what you need with the lifeboat release that wrote it, then back up into a "
    "repository made by 'lifeboat init'"
)


class RecordsView:
    """Plaintext records of a repository, readable without any key (escrow metadata)."""

    def __init__(self, storage: Storage, config: dict[str, Any] | None = None) -> None:
        self.storage = storage
        self.config = config if config is not None else read_config(storage)

    def get_record(self, name: str) -> dict[str, Any]:
        """A plaintext record (NotFoundError; IntegrityError when damaged)."""
        try:
            value = json.loads(self.storage.get(record_name(name)))
        except ValueError:
            raise IntegrityError(f"record {name} is damaged") from None
        if not isinstance(value, dict):
            raise IntegrityError(f"record {name} is damaged")
        return value

    def list_records(self, prefix: str = "") -> list[str]:
        """The names of the records under ``prefix``."""
        base = record_name("")
        return sorted(name[len(base) :] for name in list_names(self.storage, record_name(prefix)))


# -- backup keys -----------------------------------------------------------------------


def key_record_name(key_id: str) -> str:
    """The record of the backup key ``key_id``."""
    return f"{KEYS}{key_id}.json"


def retired_key_record_name(key_id: str) -> str:
    """The record whose presence retires the backup key ``key_id`` (it may add no data)."""
    return f"{KEYS}{key_id}.retired.json"


def put_key_record(store: RecordStore, key: BackupKey, *, replaces: str | None = None) -> None:
    """Records a new active backup key (``replaces``: the key a rotation retires)."""
    data: dict[str, Any] = {"key_id": key.key_id, "created": key.created, "status": "active"}
    if replaces is not None:
        data["replaces"] = replaces
    store.put_record(key_record_name(key.key_id), data)


def put_retired_key_record(store: RecordStore, old_key_id: str, new: BackupKey) -> None:
    """Retires ``old_key_id`` in favour of ``new`` (checked by ``Repository.ensure_writable``)."""
    store.put_record(
        retired_key_record_name(old_key_id),
        {"key_id": old_key_id, "retired_by": new.key_id, "time": new.created},
    )


def key_created(source: RecordSource, key_id: str) -> datetime:
    """When the backup key was created (UTC). Raises LifeboatError (missing or damaged
    record), KeyError or ValueError (a record without a readable time)."""
    created = datetime.fromisoformat(source.get_record(key_record_name(key_id))["created"])
    return created if created.tzinfo else created.replace(tzinfo=UTC)


# -- escrow ------------------------------------------------------------------------------


def escrow_record_name(record: EscrowRecord) -> str:
    """The record of one escrow split (time and SLIP-39 identifier make it unique)."""
    return f"{ESCROW}{record.created.replace(':', '')}-{record.identifier}.json"


def put_escrow_record(store: RecordStore, record: EscrowRecord) -> None:
    """Records an escrow split: threshold, custodians, identifier, fingerprint (no secret)."""
    store.put_record(escrow_record_name(record), record.to_json())


def escrow_records(source: RecordSource) -> list[EscrowRecord]:
    """Every readable escrow record, oldest first (damaged ones are skipped)."""
    from lifeboat.crypto.escrow import EscrowRecord  # imported when used (SLIP-39): light start-up

    records = []
    for name in source.list_records(ESCROW):
        try:
            records.append(EscrowRecord.from_json(source.get_record(name)))
        except (KeyError, ValueError, TypeError):
            continue
    return records


# -- drills ------------------------------------------------------------------------------


LEGACY_DRILL_KEY = DRILL_KEY  # pre-#14: unsigned, first writer wins; only reported now
DRILL_KEYS = "drill-keys/"


def drill_key_record_name(fingerprint: str) -> str:
    """The root-signed record publishing the drill key ``fingerprint`` (named after the key,
    so a planted record cannot take the name the genuine one needs)."""
    return f"{DRILL_KEYS}{fingerprint.removeprefix('sha256:')}.json"


def drill_key_record_names(source: RecordSource) -> list[str]:
    """Every record under the drill-key names (genuine or not: the caller checks)."""
    return source.list_records(DRILL_KEYS)
