"""AWS credentials per endpoint: the repository and each objects source may use their own.

Without ``profile`` or ``role_arn`` the usual AWS chain applies (environment, shared files,
instance role). ``profile`` names a profile of the shared config/credentials files;
``role_arn`` is assumed (STS AssumeRole) with the profile's (or the chain's) credentials
and refreshed before it expires, so a backup longer than the session still signs. The STS
endpoint follows botocore's rules (``AWS_ENDPOINT_URL_STS`` for a non-AWS store).
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
import botocore.session
from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
from botocore.exceptions import InvalidRegionError, ProfileNotFound

from lifeboat.errors import ConfigError
from lifeboat.redact import redact_url

SESSION_NAME = "lifeboat"


def aws_session(
    *, profile: str | None = None, role_arn: str | None = None, region: str | None = None, what: str
) -> boto3.session.Session:
    """A session with ``what``'s own credentials (``what`` names it in errors)."""
    try:
        base = boto3.session.Session(profile_name=profile, region_name=region)
    except ProfileNotFound:
        raise ConfigError(
            f"{what}: AWS profile {profile!r} is not in the AWS config or credentials files",
            hint="add it to ~/.aws/credentials (or AWS_SHARED_CREDENTIALS_FILE), or fix the profile name",
        ) from None
    if role_arn is None:
        return base
    source = base.get_credentials()
    if source is None:
        raise ConfigError(
            f"{what}: no AWS credentials to assume {role_arn} with",
            hint="give the section a profile, or set credentials in the environment",
        )
    core: Any = base._session  # boto3 exposes no public handle on its botocore session
    fetcher = AssumeRoleCredentialFetcher(
        client_creator=functools.partial(core.create_client),
        source_credentials=source,
        role_arn=role_arn,
        extra_args={"RoleSessionName": SESSION_NAME},
    )
    assumed = botocore.session.Session(profile=profile) if profile else botocore.session.Session()
    assumed._credentials = DeferredRefreshableCredentials(  # type: ignore[attr-defined]
        method="assume-role", refresh_using=fetcher.fetch_credentials
    )
    return boto3.session.Session(botocore_session=assumed, region_name=region)


def s3_client(session: boto3.session.Session, endpoint_url: str | None, **settings: Any) -> Any:
    """``session.client("s3", ...)``: an endpoint botocore refuses (its ValueError) is a
    ConfigError naming it without credentials. The policy checks its own endpoint_url when
    it is read; this one may come from AWS_ENDPOINT_URL(_S3) or a profile's endpoint_url."""
    try:
        return session.client("s3", endpoint_url=endpoint_url, **settings)
    except InvalidRegionError:  # a ValueError too: not the endpoint's fault
        region = settings.get("region_name") or session.region_name
        raise ConfigError(
            f"the S3 region {region!r} is not a region name",
            hint="check region in the policy, AWS_REGION / AWS_DEFAULT_REGION and the AWS profile",
        ) from None
    except ValueError as exc:
        shown = redact_url(endpoint_url) if endpoint_url else "set by AWS_ENDPOINT_URL(_S3) or the profile"
        raise ConfigError(  # botocore's own message names the URL whole: only its kind is said
            f"the S3 endpoint {shown} is not an endpoint URL ({str(exc).split(':', 1)[0]})",
            hint="give endpoint_url, AWS_ENDPOINT_URL(_S3) and the profile's as https URLs of host and port",
        ) from None
