"""The values a policy file holds, parsed and checked: durations ('1h30m'), sizes
('4MiB'), off-peak windows ('01:00-05:00'), cron schedules, repository URLs and the
transport rules of an S3 endpoint (no plain http unless allowed, a well-formed role ARN).
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from ipaddress import ip_address
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|K|M|G|KB|MB|GB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "K": 1024,
    "KiB": 1024,
    "KB": 1000,
    "M": 1 << 20,
    "MiB": 1 << 20,
    "MB": 10**6,
    "G": 1 << 30,
    "GiB": 1 << 30,
    "GB": 10**9,
}


def parse_duration(text: str) -> timedelta:
    """'30s', '5m', '2h', '7d', '1w', '1h30m' -> timedelta."""
    stripped = text.strip()
    if not stripped or _DURATION.sub("", stripped).strip():
        raise ValueError(f"bad duration {text!r} (use e.g. 30s, 5m, 2h, 7d, 1w, 1h30m)")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(stripped)))


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"bad size {text!r} (use e.g. 256KiB, 4MiB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def cron_valid(expression: str, **options: Any) -> bool:
    """croniter's check, imported only when a policy has a schedule (it costs ~20 ms)."""
    from croniter import croniter

    return bool(croniter.is_valid(expression, **options))


class Window(BaseModel):
    """An off-peak window 'HH:MM-HH:MM' (local time); may wrap midnight."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
        if not match:
            raise ValueError(f"bad window {text!r} (use HH:MM-HH:MM, e.g. 01:00-05:00)")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
            raise ValueError(f"bad window {text!r}: hours 0-23, minutes 0-59")
        return cls(start=time(h1, m1), end=time(0, 0) if h2 == 24 else time(h2, m2))

    def contains(self, moment: time) -> bool:
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def next_start(self, after: datetime) -> datetime:
        """The earliest moment at or after ``after`` that lies inside the window."""
        if self.contains(after.time()):
            return after
        candidate = after.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return candidate if candidate >= after else candidate + timedelta(days=1)

    def end_after(self, moment: datetime) -> datetime:
        """When the window occurrence holding ``moment`` closes (the next close otherwise)."""
        end = moment.replace(
            hour=self.end.hour, minute=self.end.minute, second=self.end.second, microsecond=0
        )
        return end if end > moment else end + timedelta(days=1)

    def length(self) -> timedelta:
        start = timedelta(hours=self.start.hour, minutes=self.start.minute)
        end = timedelta(hours=self.end.hour, minutes=self.end.minute)
        return (end - start) % timedelta(days=1) or timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _to_duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]


# "s3:/b", "file:/x", "S3://b", "s3//b", "s3:b": a scheme mistyped; as a plain path each
# would quietly become a local directory of that odd name, and backups would land there.
_SCHEME_LIKE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)(?P<sep>:/*|//+)(?P<rest>.*)$", re.S)
_REPOSITORY_SCHEMES = {"s3": "s3://", "file": "file:///", "dir": "file:///"}


def check_repository_url(url: str) -> str:
    """``file://...``, ``s3://bucket[/prefix]`` or a plain path with no scheme-like prefix."""
    if url.startswith("s3://"):
        if not url.removeprefix("s3://").split("/", 1)[0]:
            raise ValueError(f"{url!r} names no bucket (use s3://bucket/prefix)")
        return url
    if url.startswith("file://"):
        return url
    match = _SCHEME_LIKE.match(url)
    if match is None or (match["sep"].startswith("/") and match["scheme"].lower() not in _REPOSITORY_SCHEMES):
        return url  # a plain path ("backups//x" is a path, "s3//b" is not)
    fixed = _REPOSITORY_SCHEMES.get(match["scheme"].lower())
    suggestion = f": did you mean {fixed}{match['rest'].lstrip('/')}?" if fixed else ""
    raise ValueError(
        f"{url!r} is not a repository URL{suggestion} "
        "(use s3://bucket/prefix, file:///absolute/path or a plain path)"
    )


# a DNS name as botocore accepts one (labels of letters, digits and inner hyphens)
_HOSTNAME = re.compile(r"((?!-)[a-z\d-]{1,63}(?<!-)\.)*(?!-)[a-z\d-]{1,63}(?<!-)\.?", re.IGNORECASE)


def _shown_endpoint(endpoint_url: str) -> str:
    """The endpoint as an error shows it: no user or password (everything up to the last
    ``@``, which may itself hold a ``?``), no query or fragment."""
    scheme, sep, rest = endpoint_url.partition("://")
    rest = (rest if sep else scheme).rpartition("@")[2]
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}{sep}{rest}" if sep else rest


def check_endpoint_url(endpoint_url: str) -> None:
    """An endpoint the S3 client can be made for: http(s)://host[:port][/path], the host a
    DNS name or an IP address. Said when the policy is read; boto said it as a ValueError
    when the storage was opened, after the policy had passed."""
    if not _endpoint_url_ok(endpoint_url):
        raise ValueError(
            f"endpoint_url {_shown_endpoint(endpoint_url)!r} is not an endpoint URL "
            "(give an https URL of a DNS name or an IP address, and a port)"
        )


def _endpoint_url_ok(endpoint_url: str) -> bool:
    # urlsplit drops tabs and line breaks, which botocore refuses
    if any(c.isspace() or not c.isprintable() for c in endpoint_url):
        return False
    try:
        parts = urlsplit(endpoint_url)
        host, _ = parts.hostname, parts.port  # .port: ValueError when not a port number
    except ValueError:
        return False
    if host is None or parts.scheme.lower() not in ("http", "https"):
        return False
    try:
        ip_address(host)
        return True
    except ValueError:
        return len(host) <= 255 and _HOSTNAME.fullmatch(host) is not None


def refuse_plain_http(endpoint_url: str | None, allowed: bool) -> None:
    """Credentials are signed, not encrypted, and the data travels in clear over http://;
    only an explicit opt-in (a local test server, a loopback proxy) may use it."""
    if endpoint_url and endpoint_url.lower().startswith("http://") and not allowed:
        raise ValueError(
            f"endpoint_url {_shown_endpoint(endpoint_url)!r} is plain http: requests and data travel "
            "unencrypted; use https://, or set allow_insecure_http = true in this section"
        )


_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")


def check_role_arn(role_arn: str) -> None:
    if not _ROLE_ARN.fullmatch(role_arn):
        raise ValueError(
            f"role_arn {role_arn!r} is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)"
        )


def check_transport(endpoint_url: str | None, allow_insecure_http: bool, role_arn: str | None) -> None:
    """An S3 section's transport settings: an endpoint URL the client can be made for, https
    unless opted out, a well-formed role ARN."""
    if endpoint_url is not None:
        check_endpoint_url(endpoint_url)
    refuse_plain_http(endpoint_url, allow_insecure_http)
    if role_arn is not None:
        check_role_arn(role_arn)
