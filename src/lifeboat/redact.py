"""Secrets out of every log line, error and alert: URL credentials and tokens, passwords.

Webhook URLs carry their token in the query string (most services) or in the path (Slack's
``/services/T…/B…/secret``), object-store URLs may carry userinfo, and DSNs carry
``password=``. A URL is shown as ``scheme://host[:port]/first-segment/…``: enough to tell
which endpoint failed, nothing to replay a request with.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://[^\s'\"<>]+")
# key=value only (DSNs, query strings): "password: wrong" in prose is left alone
_PASSWORD = re.compile(
    r"(?i)\b(password|passwd|pwd|token|secret|api[_-]?key)(\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s,;&]+)"
)


_TOKEN_SCHEMES = ("http", "https")


def redact_url(url: str) -> str:
    """``scheme://host[:port]/first-path-segment`` plus ``/…`` when anything was cut."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url.split("://", 1)[0] + "://…"
    if port is not None:
        host = f"{host}:{port}"
    if parts.scheme.lower() not in _TOKEN_SCHEMES:
        # s3://, file://, postgresql://: names matter in errors; only credentials go
        if not (parts.username or parts.password or parts.query):
            return url  # exactly as written: an error may be about its very spelling
        user = f"{parts.username}@" if parts.username and parts.scheme.startswith("postgres") else ""
        netloc = f"{user}{host}" if (parts.username or parts.password) else parts.netloc
        return f"{parts.scheme}://{netloc}{parts.path}" + ("?…" if parts.query else "")
    segments = [s for s in parts.path.split("/") if s]
    shown = f"{parts.scheme}://{host}" + (f"/{segments[0]}" if segments else "")
    cut = len(segments) > 1 or parts.query or parts.fragment or parts.username or parts.password
    return shown + ("/…" if cut else "")


def redact(text: str) -> str:
    """``text`` with every URL shortened by ``redact_url`` and every ``password=…``-like
    value replaced by ``***``."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return _PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
