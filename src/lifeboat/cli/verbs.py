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
# The verbs whose next word changes what a run imports: the asset of `backup` and `restore`
# (a keys restore needs a third of the modules a PostgreSQL one does), the command of a
# group. Not a verb whose next word is free (`copy NAME`): a list per value would pile up.
BY_NEXT_WORD = frozenset(
    {"backup", "restore", "actions", "audit", "drill", "escrow", "evidence", "keys", "objects", "pg"}
    | {"policy", "repo", "schedule"}
)


def invoked_verb(args: list[str]) -> str | None:
    """The verb of a command line (None for the root help or no verb at all)."""
    i = _verb_index(args)
    return args[i] if i is not None else None


def invoked_object(args: list[str]) -> str | None:
    """The word right after the verb, when there is one and it is not an option: the asset
    of `backup app` and `restore db`, the command of `policy check` (None for `backup
    --json app`: it is not told apart from an option's value)."""
    i = _verb_index(args)
    if i is None or i + 1 >= len(args) or args[i + 1].startswith("-"):
        return None
    return args[i + 1]


def _verb_index(args: list[str]) -> int | None:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("--help", "-h"):
            return None
        i += 2 if args[i] in _GLOBAL_VALUED else 1
    return i if i < len(args) else None
