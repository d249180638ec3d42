"""`init` as all or nothing: every input is checked before anything is written, and when
a later step fails, what was written is removed again, so no repository is left that
backups could go into but nobody could restore from."""

from __future__ import annotations

import os
import pwd
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeboat import runtime
from lifeboat.errors import ConfigError, LifeboatError, StorageError
from lifeboat.repo import Repository
from lifeboat.repo.format import CONFIG_NAME

if TYPE_CHECKING:
    from lifeboat.crypto.escrow_key import PendingEscrow
    from lifeboat.crypto.keys import RecoveryKey
    from lifeboat.policy import Policy


@dataclass(frozen=True)
class InitRequest:
    keyfile: Path
    recovery_out: Path | None
    shares_out: Path | None
    passphrases: dict[str, bytes] = field(default_factory=dict, repr=False)
    owner: str | None = None  # --owner: the OS user archive_command runs as


@dataclass
class InitResult:
    repository: str
    id: str
    backup_key: str
    recovery_fingerprint: str
    recovery_key: str | None = None
    shares: list[str] = field(default_factory=list)
    threshold: int | None = None
    owner: str | None = None
    drill_key_fingerprint: str | None = None  # what auditors pin for `evidence verify --key`
    key_material_escrow: str | None = None  # the escrow key's fingerprint (kind = "keys")
    writer: str | None = None  # the first writer's name (its key is the backup key file)


@dataclass(frozen=True)
class Owner:
    """The OS user the repository and the backup key are given to, so PostgreSQL's
    archive_command (running as that user) can push while root runs backups."""

    name: str
    uid: int
    gid: int
    source: str  # "--owner" or "owner of PGDATA ..."


def resolve_owner(policy: Policy, explicit: str | None) -> Owner | None:
    """--owner, or, when root initialises, the owner of a postgres asset's local PGDATA
    (its archive_command runs as that user). None: whoever runs init owns everything."""
    if explicit:
        try:
            entry = pwd.getpwnam(explicit)
        except KeyError:
            raise ConfigError(f"--owner {explicit}: no such user on this machine") from None
        if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
            raise ConfigError(
                f"--owner {explicit}: only root can give the repository to another user",
                hint="run init as root, or as that user",
            )
        return Owner(entry.pw_name, entry.pw_uid, entry.pw_gid, "--owner")
    if os.geteuid() != 0:
        return None
    found: dict[int, str] = {}
    for asset in policy.assets.values():
        from lifeboat.assets.registry import kind_of

        owned = kind_of(asset).data_owner_path(asset)
        try:
            uid = os.stat(owned).st_uid if owned is not None else 0
        except OSError:
            continue
        if uid != 0:
            found.setdefault(uid, str(owned))
    if len(found) > 1:
        raise ConfigError(
            "the postgres assets' data directories have different owners",
            hint="name the repository's owner with --owner USER (and add the others to its group)",
        )
    if not found:
        return None
    uid, pgdata = next(iter(found.items()))
    entry = pwd.getpwuid(uid)
    return Owner(entry.pw_name, uid, entry.pw_gid, f"owner of {pgdata}")


def _why_not_creatable(path: Path) -> str | None:
    """Why a new file or directory cannot be made at ``path``: its nearest existing
    ancestor must be a directory we may write (os.access sees read-only mounts and the
    immutable attribute even for root)."""
    parent = path.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{parent} is not writable"
    return None


def _check_new_file(path: Path, what: str) -> None:
    if os.path.lexists(path):
        raise ConfigError(f"{what} {path} already exists", hint="init never overwrites a key or share")
    problem = _why_not_creatable(path)
    if problem:
        raise ConfigError(f"cannot write the {what} {path}: {problem}")


def _check_state_dir(state: Path) -> None:
    """The audit entry is init's last write: its directory must take it (checked without
    creating anything; `runtime.require_writable_state` would)."""
    audit = state / "audit.jsonl"
    if os.path.lexists(audit):
        problem = None if os.access(audit, os.W_OK) else f"{audit} is not writable"
    elif os.path.lexists(state):
        problem = None if os.access(state, os.W_OK | os.X_OK) else f"{state} is not writable"
    else:
        problem = _why_not_creatable(state)
    if problem:
        raise ConfigError(
            f"state directory {state} cannot take the audit log: {problem}",
            hint="make it writable, or set [state] dir in the policy to a writable directory",
        )


def validate(policy: Policy, request: InitRequest, storage: Any) -> tuple[int, list[str]]:
    """Every check init can make without writing; returns the escrow's (M, custodians)."""
    from lifeboat.crypto.escrow import split_problem

    if request.recovery_out is None and request.shares_out is None:
        raise ConfigError(
            "init needs somewhere to put the recovery key",
            hint="pass --recovery-key-out FILE or --shares-out DIR (escrow shares)",
        )
    threshold, source = policy.escrow_source()
    custodians = list(policy.escrow.custodians)
    strangers = sorted(set(request.passphrases) - set(custodians))
    if strangers:
        raise ConfigError(f"passphrase given for {', '.join(strangers)}, not a custodian in [escrow]")
    if os.path.lexists(request.keyfile):
        raise ConfigError(
            f"backup key {request.keyfile} already exists", hint="this repository seems initialised"
        )
    _check_new_file(request.keyfile, "backup key")
    if request.recovery_out is not None:
        _check_new_file(request.recovery_out, "recovery key")
    if request.shares_out is not None:
        problem = split_problem(threshold, custodians)
        if problem is not None:
            raise ConfigError(
                f"escrow {threshold}-of-{len(custodians)} ({source}): {problem}",
                hint="fix [escrow] in the policy; nothing was written",
            )
        for name in custodians:
            _check_new_file(request.shares_out / f"{name}.share", "share file")
    _check_state_dir(Path(policy.state_dir))
    if storage.exists(CONFIG_NAME):
        raise ConfigError(
            f"a repository already exists at {storage.url}",
            hint="use it with its existing keys, or choose another location",
        )
    return threshold, custodians


class _Undo:
    """What init wrote, to take back: local files, directories it created, and the
    repository objects that were not there before."""

    def __init__(self, storage: Any, state: Path) -> None:
        self.storage = storage
        # a state directory init creates holds nothing but what init put there (cache, log)
        self.new_state = None if os.path.lexists(state) else state
        self.objects_before = {o.name for o in storage.list("")}
        self.root = getattr(storage, "root", None)  # a local repository's directory
        self.root_existed = self.root is not None and os.path.lexists(self.root)
        self.files: list[Path] = []
        self.dirs: list[Path] = []

    def will_write(self, path: Path) -> None:
        """Call before writing ``path``: records it (when new) and the directories it will create."""
        if os.path.lexists(path):
            return
        missing = []
        parent = path.parent
        while not os.path.lexists(parent) and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        self.dirs.extend(missing)  # deepest first
        self.files.append(path)

    def run(self) -> list[str]:
        """Remove everything recorded; returns what could not be removed."""
        left: list[str] = []
        try:
            new = sorted({o.name for o in self.storage.list("")} - self.objects_before, reverse=True)
        except LifeboatError:
            new = [CONFIG_NAME]
        for name in new:
            try:
                self.storage.delete(name)
            except LifeboatError:
                left.append(f"{self.storage.url}/{name}")
        if self.root is not None and not self.root_existed:
            _remove_empty_tree(Path(self.root))
        for path in self.files:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                left.append(str(path))
        for directory in self.dirs:
            try:
                directory.rmdir()
            except OSError:
                pass  # not empty: something else was put there meanwhile
        if self.new_state is not None:
            shutil.rmtree(self.new_state, ignore_errors=True)
        return left


def _remove_empty_tree(root: Path) -> None:
    for dirpath, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def initialise(policy: Policy, request: InitRequest) -> InitResult:
    storage = runtime.storage_for(policy)
    threshold, custodians = validate(policy, request, storage)
    owner = resolve_owner(policy, request.owner)
    undo = _Undo(storage, Path(policy.state_dir))
    try:
        result = _write(policy, request, storage, undo, threshold, custodians, owner)
        result.owner = owner.name if owner is not None else None
        return result
    except BaseException as exc:
        left = undo.run()
        if isinstance(exc, OSError):  # a disk filling up meanwhile, not a bug
            message = f"init failed writing {exc.filename or 'a file'}: {exc.strerror or exc}"
        elif isinstance(exc, LifeboatError):
            message = exc.message
        else:
            raise
        code = exc.exit_code if isinstance(exc, LifeboatError) else None
        if left:
            raise StorageError(
                f"{message}; init was undone except {', '.join(left)}",
                hint="remove those by hand before trying again",
                exit_code=code,
            ) from None
        raise StorageError(
            f"{message}; nothing was kept", hint=getattr(exc, "hint", None), exit_code=code
        ) from None


def _give_root(storage: Any, owner: Owner) -> None:
    """A local repository's directory, owned by ``owner`` before anything is written into
    it: LocalStorage hands everything root creates below to the directory's owner."""
    root = getattr(storage, "root", None)
    if root is None:
        return
    Path(root).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o2770)
    os.chown(root, owner.uid, owner.gid)


def _give_key(undo: _Undo, keyfile: Path, owner: Owner) -> None:
    """The backup key, and the directories init made for it, to ``owner`` (still 0600)."""
    for directory in undo.dirs:
        if keyfile.is_relative_to(directory):
            os.chown(directory, owner.uid, owner.gid)
    os.chown(keyfile, owner.uid, owner.gid)
    parent = keyfile.parent
    while parent != parent.parent:
        mode = os.stat(parent)
        reachable = (
            (mode.st_uid == owner.uid and mode.st_mode & 0o100)
            or (mode.st_gid == owner.gid and mode.st_mode & 0o010)
            or mode.st_mode & 0o001
        )
        if not reachable:
            raise ConfigError(
                f"{owner.name} cannot reach the backup key: {parent} is closed to it",
                hint=f"chmod o+x {parent} or chown it to {owner.name}, or put keyfile elsewhere",
            )
        parent = parent.parent


def _give_state(state: Path, owner: Owner) -> None:
    """The state directory as init left it (audit log, cache): wal push appends to the
    log as ``owner``; later root-run commands append to the same file, keeping its owner."""
    for dirpath, _, filenames in os.walk(state):
        os.chown(dirpath, owner.uid, owner.gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), owner.uid, owner.gid)


def publish_drill_key(repo: Repository, recovery: RecoveryKey) -> str:
    """The drill signing key, sealed to the recovery key in a root-signed record (issue #14):
    evidence from the first drill on is signed by a key auditors can pin now."""
    from lifeboat.crypto.writers import RootKey
    from lifeboat.drills.signing_key import publish

    _key, fingerprint = publish(repo, RootKey.from_chain(repo.id, [recovery]))
    return fingerprint


def key_material_escrow(
    policy: Policy, request: InitRequest, threshold: int, custodians: list[str]
) -> PendingEscrow | None:
    """The escrow key that key material (``kind = "keys"`` assets) is sealed to, when the
    policy has any: its private half goes only into the custodians' share files."""
    from lifeboat.assets.registry import kind_of
    from lifeboat.crypto.escrow_key import PendingEscrow

    escrowed = [name for name, asset in policy.assets.items() if kind_of(asset).needs_escrow]
    if not escrowed:
        return None
    if request.shares_out is None:
        raise ConfigError(
            f"asset {escrowed[0]} is key material: it is sealed to an escrow key that exists only "
            "as custodians' shares, so init needs a place for them",
            hint="pass --shares-out DIR (one share file per custodian in [escrow])",
        )
    return PendingEscrow(threshold, custodians)


def _write(
    policy: Policy,
    request: InitRequest,
    storage: Any,
    undo: _Undo,
    threshold: int,
    custodians: list[str],
    owner: Owner | None = None,
) -> InitResult:
    escrow = key_material_escrow(policy, request, threshold, custodians)
    if owner is not None:
        _give_root(storage, owner)
    repo, backup_key, recovery = Repository.create(
        storage,
        lock_days=policy.repository.lock_days,
        cache_dir=runtime.cache_dir(policy),
        escrow_key=escrow.bind if escrow is not None else None,
    )
    undo.will_write(request.keyfile)
    backup_key.save(request.keyfile)
    if owner is not None:
        _give_key(undo, request.keyfile, owner)
    result = InitResult(storage.url, repo.id, str(request.keyfile), recovery.fingerprint())
    result.writer = backup_key.writer
    if request.recovery_out is not None:
        undo.will_write(request.recovery_out)
        recovery.save(request.recovery_out)
        result.recovery_key = str(request.recovery_out)
    if request.shares_out is not None:
        from lifeboat.crypto.escrow import split_recovery_key

        for name in custodians:
            undo.will_write(request.shares_out / f"{name}.share")
        written = split_recovery_key(
            policy,
            repo,
            recovery,
            request.shares_out,
            threshold,
            custodians,
            request.passphrases,
            key_material=escrow.shares if escrow is not None else None,
        )
        result.shares = [str(p) for p in written]
        result.threshold = threshold
    result.drill_key_fingerprint = publish_drill_key(repo, recovery)
    if escrow is not None and escrow.public is not None:
        from lifeboat.repo.escrow import put_signed_escrow_record

        put_signed_escrow_record(repo, escrow.public, recovery)
        result.key_material_escrow = escrow.public.fingerprint
    runtime.audit_log(policy, repo).append("init", details_repo=repo.id)
    if owner is not None:
        _give_state(Path(policy.state_dir), owner)
    return result
