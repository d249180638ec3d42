"""AWS IAM and bucket policies for a repository on S3 (docs/operations/least-privilege.md).

Roles:

* ``backup`` (every backup host): put-if-absent writes, reads of what a backup needs
  (config, indexes, snapshots, key records), Object Lock retention set and extended
  (COMPLIANCE only grows, so it cannot shorten anything), and deletion only of its own
  repository locks under ``locks/``. No DeleteObject elsewhere, so no delete markers and
  no version deletion on repository data.
* ``restore`` (a restore or check host): reads, and its own locks.
* ``admin`` (forget, prune, key rotation): the backup role plus deletion of versions, which
  Object Lock still refuses until their retention has passed.

The bucket policy makes conditional writes mandatory on repository keys: a PUT without
``If-None-Match`` (an overwrite) is denied for every principal, and so are plain HTTP and
governance bypass.
"""

from __future__ import annotations

from typing import Any

from lifeboat.errors import ConfigError

ROLES = ("backup", "restore", "admin")

LIST = ["s3:ListBucket", "s3:ListBucketVersions"]
BUCKET_READ = ["s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration", "s3:GetBucketLocation"]
READ = ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:GetObjectVersionAttributes"]
# x-amz-object-lock-* on a PUT needs s3:PutObjectRetention too
WRITE = ["s3:PutObject", "s3:PutObjectRetention"]
DELETE = ["s3:DeleteObject", "s3:DeleteObjectVersion"]


def _arns(bucket: str, prefix: str) -> tuple[str, str, str]:
    if not bucket or "/" in bucket or "*" in bucket:
        raise ConfigError(f"bucket {bucket!r} is not a bucket name")
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    objects = f"arn:aws:s3:::{bucket}/{base}*"
    locks = f"arn:aws:s3:::{bucket}/{base}locks/*"
    return f"arn:aws:s3:::{bucket}", objects, locks


def _list_statement(bucket_arn: str, prefix: str) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": "ListRepository",
        "Effect": "Allow",
        "Action": LIST,
        "Resource": bucket_arn,
    }
    base = prefix.strip("/")
    if base:
        statement["Condition"] = {"StringLike": {"s3:prefix": [base, f"{base}/*"]}}
    return statement


def iam_policy(role: str, bucket: str, prefix: str = "") -> dict[str, Any]:
    """The identity policy (JSON-ready) for ``role`` on ``s3://bucket/prefix``."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}", hint=f"choose one of {', '.join(ROLES)}")
    bucket_arn, objects, locks = _arns(bucket, prefix)
    statements: list[dict[str, Any]] = [
        _list_statement(bucket_arn, prefix),
        {"Sid": "InspectBucket", "Effect": "Allow", "Action": BUCKET_READ, "Resource": bucket_arn},
        {"Sid": "ReadRepository", "Effect": "Allow", "Action": READ, "Resource": objects},
    ]
    if role in ("backup", "admin"):
        statements.append(
            {
                "Sid": "PutIfAbsent",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": objects,
                "Condition": {"Null": {"s3:if-none-match": "false"}},
            }
        )
        statements.append(
            {
                "Sid": "LockAndExtendCompliance",
                "Effect": "Allow",
                "Action": ["s3:PutObjectRetention"],
                "Resource": objects,
                "Condition": {"StringEquals": {"s3:object-lock-mode": "COMPLIANCE"}},
            }
        )
    else:
        statements.append(
            {
                "Sid": "OwnLocksOnly",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": locks,
                "Condition": {"Null": {"s3:if-none-match": "false"}},
            }
        )
    statements.append({"Sid": "ReleaseOwnLocks", "Effect": "Allow", "Action": DELETE, "Resource": locks})
    if role == "admin":
        statements.append({"Sid": "PruneAndForget", "Effect": "Allow", "Action": DELETE, "Resource": objects})
    else:
        statements.append(
            {"Sid": "NeverDeleteData", "Effect": "Deny", "Action": DELETE, "NotResource": locks}
        )
    statements.append(
        {
            "Sid": "NoBypassNoBucketChanges",
            "Effect": "Deny",
            "Action": [
                "s3:BypassGovernanceRetention",
                "s3:PutBucketObjectLockConfiguration",
                "s3:PutBucketVersioning",
                "s3:PutBucketPolicy",
                "s3:DeleteBucketPolicy",
                "s3:PutLifecycleConfiguration",
                "s3:DeleteBucket",
            ],
            "Resource": [bucket_arn, objects],
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def bucket_policy(bucket: str, prefix: str = "") -> dict[str, Any]:
    """The bucket policy: conditional writes mandatory on repository keys, TLS only."""
    bucket_arn, objects, _ = _arns(bucket, prefix)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "RequirePutIfAbsent",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": objects,
                "Condition": {"Null": {"s3:if-none-match": "true"}},
            },
            {
                "Sid": "RequireTLS",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, objects],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "NoGovernanceBypass",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:BypassGovernanceRetention",
                "Resource": objects,
            },
        ],
    }
