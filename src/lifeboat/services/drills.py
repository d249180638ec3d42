"""The drill service: open the repository once (with the escrow shares a keys drill needs),
open the drill signing key sealed in it, run the drill, audit it, and sign its evidence,
passed or failed. Without the signing key (no recovery key, a damaged record) nothing can
be signed: the drill is audited as failed with the reason."""

from __future__ import annotations

import dataclasses
import functools
import threading
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from lifeboat import runtime
from lifeboat.crypto.credentials import Credentials
from lifeboat.crypto.keys import load_backup_key
from lifeboat.crypto.writers import RootKey
from lifeboat.drills.results import DrillResults, TrustedKeys, newest_audited_bundles, read_drill_results
from lifeboat.drills.runner import DrillRun, Log
from lifeboat.drills.service import (
    audit_mark,
    bundle_dir,
    drill_audit,
    drill_policy,
    escrowed_asset,
    run_steps,
    write_evidence,
)
from lifeboat.drills.signing_key import config_root_public, lookup, repository_signer, trusted_drill_keys
from lifeboat.errors import IntegrityError, KeyError_, LifeboatError, NotFoundError, StorageError
from lifeboat.policy import Policy
from lifeboat.repo import Repository
from lifeboat.repo.records import RecordSource, RecordsView
from lifeboat.repo.recovery_chain import resolve_chain
from lifeboat.services.restore import perform
from lifeboat.services.session import failed_before_opening, reading


def run_drill(
    policy: Policy,
    name: str,
    creds: Credentials,
    *,
    keep: bool = False,
    evidence_dir: Path | None = None,
    at: datetime | None = None,
    log: Log = lambda _: None,
) -> tuple[DrillRun, Path]:
    """Run drill `name`; returns its record and evidence bundle (the audit log has its verdict)."""
    primary, policy = policy, drill_policy(policy, name)
    drill = policy.drills[name]
    if drill.repository is not None:
        log(f"reading from copy {drill.repository!r} ({policy.repository.url})")
    if not creds.shares and drill.shares:
        creds = dataclasses.replace(creds, shares=tuple(drill.shares))
    mark = audit_mark(runtime.audit_log(policy).path)
    with ExitStack() as stack:
        try:
            opened = reading(policy, creds, purpose=f"drill {name}", asset=escrowed_asset(policy, name))
            session = stack.enter_context(opened)
        except LifeboatError as exc:  # the key refused, storage down: a failed drill all the same
            failed_before_opening(policy, "drill", exc, drill=name, scenario=drill.scenario)
            raise
        try:
            signer = repository_signer(session.repo)
        except LifeboatError as exc:
            session.record("drill", outcome="failed", drill=name, scenario=drill.scenario, error=exc.message)
            raise
        for refusal in signer.refused:
            log(f"refused drill-key record {refusal}")
        if signer.issued:
            log(f"drill signing key issued (this repository had none): {signer.fingerprint}")
        restore = functools.partial(perform, policy, session.repo)
        try:
            run = run_steps(policy, name, session.repo, restore, keep=keep, at=at, log=log)
        except LifeboatError as exc:
            session.record("drill", outcome="failed", drill=name, scenario=drill.scenario, error=exc.message)
            raise
        run.signing_key = signer.fingerprint
        run.refused_drill_key_records = list(signer.refused)
        if drill.repository is not None:  # after the run: its measured RTO never waits on this
            retired = copy_key_retired(primary, signer.fingerprint, session.repo)
            if retired is not None:
                log(
                    f"warning: the repository retired this copy's drill key {signer.fingerprint} on "
                    f"{retired.isoformat(timespec='seconds')}: status will refuse this drill's evidence; "
                    f"run 'lifeboat copy {drill.repository}' before the next drill"
                )
        try:
            bundle = bundle_dir(policy, name, run, evidence_dir)
        except OSError as exc:  # the drill ran: its verdict is audited all the same
            error = f"cannot make the evidence directory: {exc.strerror or exc}"
            session.record("drill", outcome="failed", drill=name, scenario=drill.scenario, error=error)
            raise StorageError(error, hint="check the drill's evidence_dir") from None
        session.record(
            "drill",
            outcome=run.verdict,
            drill=name,
            scenario=run.scenario,
            bundle=str(bundle),
            started=run.started,
            rto_s=run.total_rto_s,
            signed_by=signer.fingerprint,
            refused_records=list(signer.refused),
            **({"error": run.stopped} if run.stopped else {}),
        )
        run.audit_entries, run.key_access = drill_audit(session.audit.path, mark)
        write_evidence(policy, name, run, bundle, signer.key)
    return run, bundle


# How long a drill on a copy asks the primary whether the copy's key was retired: an advice,
# so a primary out of reach (the outage a copy is drilled for) never holds the drill up.
RETIRED_KEY_WAIT_S = 10.0


def copy_key_retired(primary: Policy, fingerprint: str, copy: RecordSource) -> datetime | None:
    """When the primary repository retired the drill key a copy signs with (a rotation, or
    a newer key of its own: drills/signing_key.py ``trusted_drill_keys``); None when it has
    not, or when the primary does not answer within ``RETIRED_KEY_WAIT_S`` (a drill on a
    copy never needs it)."""
    answer: list[datetime | None] = []

    def ask() -> None:
        try:
            answer.append(_retired_in_primary(primary, fingerprint, copy))
        except Exception:  # an answer past the wait may find the copy closed: no traceback
            pass

    asking = threading.Thread(target=ask, daemon=True, name="retired-copy-key")
    asking.start()
    asking.join(RETIRED_KEY_WAIT_S)
    return answer[0] if answer else None


def _retired_in_primary(primary: Policy, fingerprint: str, copy: RecordSource) -> datetime | None:
    try:
        # without this host's cache: the primary's writer-registry checkpoint saved here
        # would refuse a copy whose registry lags it at the next drill
        key = load_backup_key(Path(primary.repository.keyfile))
        storage = runtime.storage_for(primary)
    except LifeboatError:
        return None
    try:
        repo = Repository.open(storage, backup_key=key, cache_dir=None)
    except LifeboatError:
        storage.close()
        return None
    try:
        return trusted_drill_keys(repo, {"drilled": lambda: copy}).get(fingerprint)
    except LifeboatError:
        return None
    finally:
        repo.close()


def published_drill_key(policy: Policy, creds: Credentials) -> tuple[str, str, list[str]]:
    """The drill key fingerprint the repository publishes in its root-signed record, how
    the root key was known, and the records refused (planted or unsigned)."""
    storage = runtime.storage_for(policy)
    try:
        records = RecordsView(storage)
        repo_id = str(records.config["id"])
        root_public = config_root_public(records.config)
        source = "the repository's root-signed drill-key record, root key from its config"
        # the recovery key (or shares) when given: whoever can rewrite the config cannot
        # rewrite what they derive
        if creds.recovery_key or creds.shares or root_public is None:
            if not (creds.recovery_key or creds.shares or policy.repository.recovery_key):
                raise KeyError_(
                    "this repository's config names no root key to check its drill-key record with",
                    hint="pin the key: --key FINGERPRINT (printed by 'lifeboat init' and 'drill run'), "
                    "or pass --recovery-key FILE or --share FILE",
                )
            recovery = runtime.resolve_recovery(policy, creds, purpose="evidence verify", storage=storage)
            derived = RootKey.from_chain(repo_id, resolve_chain(records, recovery)).public
            if root_public is not None and root_public != derived:
                raise IntegrityError(
                    "the repository's config names a root key that is not this recovery key's: "
                    "the config was rewritten"
                )
            root_public = derived
            source = "the repository's root-signed drill-key record, root key from the recovery key"
        found = lookup(records, root_public, repo_id)
    finally:
        storage.close()
    if found.published is None:
        raise NotFoundError(
            "the repository publishes no root-signed drill key"
            + (f" ({len(found.refused)} refused record(s))" if found.refused else ""),
            hint="run a drill with the recovery key to issue one, or pin the key with --key FINGERPRINT",
        )
    return found.published.fingerprint, source, found.refused


def policy_drill_results(policy: Policy) -> DrillResults:
    """The policy's drills' results, as their signed evidence vouches for them (the
    repository's root-signed drill-key records are read only when there is a bundle)."""
    from lifeboat.ops.status import audit_entries

    audited = newest_audited_bundles(audit_entries(runtime.state_dir(policy)))
    evidence_dirs = {name: Path(d.evidence_dir) for name, d in policy.drills.items()}
    with ExitStack() as stack:

        def trusted() -> TrustedKeys:
            repo = runtime.open_for_write(policy)
            stack.callback(repo.close)
            return trusted_drill_keys(repo, stack.enter_context(runtime.drill_copy_records(policy)))

        return read_drill_results(evidence_dirs, trusted, audited)


def drill_overview(policy: Policy) -> list[dict[str, Any]]:
    """`drill list`: each drill of the policy with its last result that holds, and the
    bundles refused that matter beside it (``RefusedBundle.matters``)."""
    found = policy_drill_results(policy)
    rows: list[dict[str, Any]] = []
    for name, drill in policy.drills.items():
        last = found.last_of(name)
        last_start = str(last["started"]) if last else None
        rows.append(
            {
                "name": name,
                "scenario": drill.scenario,
                "assets": drill.assets,
                "every": drill.every.total_seconds(),
                "last_run": last_start,
                "last_verdict": last.get("verdict") if last else None,
                "last_rto_s": last.get("total_rto_s") if last else None,
                "bundle": last["bundle"] if last else None,
                "refused_bundles": [
                    {"bundle": r.bundle, "problem": r.problem}
                    for r in found.refused
                    if name in r.drills and r.matters(last_start)
                ],
            }
        )
    return rows
