"""`lifeboat repo iam-policy`: what each role may do to repository keys."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.cli.conftest import write_policy
from tests.harness import LifeboatCli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return LifeboatCli(timeout=60).run(*args, check=False)


def allowed(policy: dict, action: str, resource: str) -> bool:
    """Allowed by some statement and denied by none (exact ARNs and trailing-* patterns,
    enough for the statements lifeboat prints; conditions ignored)."""

    def matches(patterns: str | list[str]) -> bool:
        items = [patterns] if isinstance(patterns, str) else patterns
        return any(resource == p or (p.endswith("*") and resource.startswith(p[:-1])) for p in items)

    verdict = False
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        if action not in actions:
            continue
        hit = matches(st["Resource"]) if "Resource" in st else not matches(st["NotResource"])
        if hit and st["Effect"] == "Deny":
            return False
        verdict = verdict or hit
    return verdict


ARN = "arn:aws:s3:::vault/lifeboat"


@pytest.mark.parametrize("role", ["backup", "restore"])
def test_backup_and_restore_roles_never_delete_repository_data(role):
    policy = json.loads(
        run("repo", "iam-policy", "--role", role, "--bucket", "vault", "--prefix", "lifeboat").stdout
    )
    for name in ("config", "data/ab/abcd", "index/ef", "snapshots/01", "keys/k.json"):
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"):
            assert not allowed(policy, action, f"{ARN}/{name}"), (role, action, name)
        assert allowed(policy, "s3:GetObjectVersion", f"{ARN}/{name}")
    # repository locks are released by deleting them
    assert allowed(policy, "s3:DeleteObject", f"{ARN}/locks/0123")
    assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::vault/elsewhere/config")


def test_backup_writes_only_put_if_absent_and_admin_may_prune():
    backup = json.loads(
        run("repo", "iam-policy", "--role", "backup", "--bucket", "vault", "--prefix", "lifeboat").stdout
    )
    puts = [s for s in backup["Statement"] if "s3:PutObject" in s["Action"] and s["Effect"] == "Allow"]
    assert puts and all(s["Condition"] == {"Null": {"s3:if-none-match": "false"}} for s in puts)
    retention = [s for s in backup["Statement"] if "s3:PutObjectRetention" in s["Action"]]
    assert retention[0]["Condition"] == {"StringEquals": {"s3:object-lock-mode": "COMPLIANCE"}}
    admin = json.loads(
        run("repo", "iam-policy", "--role", "admin", "--bucket", "vault", "--prefix", "lifeboat").stdout
    )
    assert allowed(admin, "s3:DeleteObjectVersion", f"{ARN}/data/ab/abcd")
    assert not allowed(admin, "s3:BypassGovernanceRetention", f"{ARN}/data/ab/abcd")


def test_bucket_policy_requires_conditional_writes_and_defaults_to_the_policy_url(tmp_path):
    policy_file = write_policy(tmp_path, tmp_path, "s3://vault/team/lifeboat")
    proc = run("--config", str(policy_file), "repo", "iam-policy", "--bucket-policy")
    assert proc.returncode == 0, proc.stderr
    statements = {s["Sid"]: s for s in json.loads(proc.stdout)["Statement"]}
    put = statements["RequirePutIfAbsent"]
    assert put["Effect"] == "Deny" and put["Principal"] == "*"
    assert put["Resource"] == "arn:aws:s3:::vault/team/lifeboat/*"
    assert put["Condition"] == {"Null": {"s3:if-none-match": "true"}}


def test_a_file_repository_or_unknown_role_is_a_one_line_error(tmp_path):
    policy_file = write_policy(tmp_path, tmp_path, f"file://{tmp_path / 'repo'}")
    proc = run("--config", str(policy_file), "repo", "iam-policy")
    assert proc.returncode == 2 and proc.stderr.startswith("lifeboat: error: repository file://")
    proc = run("repo", "iam-policy", "--role", "root", "--bucket", "vault")
    assert proc.returncode == 2 and "unknown role 'root'" in proc.stderr and "Traceback" not in proc.stderr
