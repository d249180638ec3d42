"""The verbs of the `lifeboat` command and the modules that add each to typer's `app`:
plain data, read before typer is imported (by `cli/entry.py`, to name the command whose
modules to read ahead, and by `cli/app.py`, to import only the verb's own)."""

from __future__ import annotations

# The modules that add each verb to `app`. A run imports only its verb's: every verb module
# costs start-up (backup's alone was ~300 ms) and `status` needs none of the others. The
# root help, an unknown word (typer's "did you mean") and no verb import them all.
VERB_MODULES: dict[str, tuple[str, ...]] = {
    "actions": ("actions_cmd",),
    "audit": ("audit_cmd",),
    "backup": ("backup_cmd",),
    "copy": ("copy_cmd",),
    "daemon": ("daemon_cmd",),
    "status": ("daemon_cmd",),
    "schedule": ("daemon_cmd",),
    "demo": ("demo_cmd",),
    "drill": ("drill_cmd",),
    "escrow": ("escrow_cmd",),
    "evidence": ("evidence_cmd",),
    "keys": ("keys_cmd",),
    "objects": ("objects_cmd",),
    "pg": ("pg_cmd",),
    "policy": ("policy_cmd", "policy_init_cmd"),
    "init": ("repo_cmds",),
    "snapshots": ("repo_cmds",),
    "check": ("repo_cmds",),
    "forget": ("repo_cmds",),
    "prune": ("repo_cmds",),
    "repo": ("repo_iam_cmd",),
    "report": ("report_cmd",),
    "restore": ("restore_cmd",),
    "unlock": ("unlock_cmd",),
    "wal": ("wal_cmd",),
}
ALL_VERB_MODULES = tuple(dict.fromkeys(m for ms in VERB_MODULES.values() for m in ms))
_GLOBAL_VALUED = frozenset({"--config", "-c", "--repository"})


def invoked_verb(args: list[str]) -> str | None:
    """The verb of a command line (None for the root help or no verb at all)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("--help", "-h"):
            return None
        i += 2 if args[i] in _GLOBAL_VALUED else 1
    return args[i] if i < len(args) else None
