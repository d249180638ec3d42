"""What an S3 failure means, decided once for the repository driver (`storage/s3.py`) and
the objects source (`assets/objects/source.py`); each words its own message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

Reason = Literal[
    "unreachable", "no-credentials", "bad-credentials", "no-bucket", "not-found", "exists", "denied", "other"
]

# NoSuchVersion: a pinned version that a prune elsewhere removed since it was listed
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404", "NotFound"})
BAD_CREDENTIALS_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"})
THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "RequestTimeout"})


@dataclass(frozen=True)
class S3Failure:
    """An S3 error reduced to what callers act on: a reason, the error code and HTTP status."""

    reason: Reason
    code: str = ""
    status: int = 0

    @property
    def transient(self) -> bool:
        """Worth retrying: a server-side error or throttling, never a refusal."""
        return self.reason == "other" and (self.status >= 500 or self.code in THROTTLING_CODES)


def classify_code(code: str, status: int) -> S3Failure:
    """The failure an S3 error code and HTTP status stand for (a HEAD has no code)."""
    if code == "NoSuchBucket":
        return S3Failure("no-bucket", code, status)
    if code in NOT_FOUND_CODES or (not code and status == 404):
        return S3Failure("not-found", code, status)
    if code in ("PreconditionFailed", "412") or status == 412:
        return S3Failure("exists", code, status)
    if code in BAD_CREDENTIALS_CODES:
        return S3Failure("bad-credentials", code, status)
    if code == "AccessDenied":
        return S3Failure("denied", code, status)
    return S3Failure("other", code, status)


def classify(exc: Exception) -> S3Failure | None:
    """The failure behind a botocore exception; None for a transfer error (no answer)."""
    if isinstance(exc, EndpointConnectionError):
        return S3Failure("unreachable")
    if isinstance(exc, NoCredentialsError):
        return S3Failure("no-credentials")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return classify_code(code, status)
    return None
