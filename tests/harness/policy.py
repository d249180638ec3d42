"""Policies built from typed pieces instead of TOML templates copied between test files.

    policy = (
        PolicyBuilder()
        .repository(f"file://{root}/repo", recovery_key="keys/recovery.key")
        .data_class("standard", rpo="1d", retention={"last": 2})
        .files("config", [root / "etc"])
        .write(root / "lifeboat.toml")
    )

Each method sets one table; keyword arguments the builder does not name go into the table
as they are, so a test can reach any policy setting. Test endpoints are plain HTTP on
127.0.0.1: ``s3_repository``/``objects``/``copy`` with an ``http://`` endpoint turn on
``allow_insecure_http`` (and ``trust_endpoint`` when asked) as an operator would have to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """One TOML value; a JSON string is a valid TOML basic string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Iterable):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _http(endpoint: str | None) -> bool:
    return bool(endpoint) and str(endpoint).startswith("http://")


class PolicyBuilder:
    """A lifeboat policy assembled table by table; ``text()`` is the TOML, ``write()`` saves it."""

    def __init__(self, mode: str = "development") -> None:
        self._tables: dict[tuple[str, ...], dict[str, Any]] = {}
        self.deployment(mode=mode)

    def table(self, *path: str, **values: Any) -> Self:
        """Set (merge) keys of the table at ``path``; None values are left out."""
        self._tables.setdefault(path, {}).update({k: v for k, v in values.items() if v is not None})
        return self

    def remove(self, *path: str, keys: Iterable[str]) -> Self:
        """Drop ``keys`` from the table at ``path`` (as if the operator deleted the lines)."""
        for key in keys:
            self._tables.get(path, {}).pop(key, None)
        return self

    def repository(self, url: str, *, keyfile: str | Path = "keys/backup.key", **extra: Any) -> Self:
        endpoint = extra.get("endpoint_url")
        if _http(endpoint):
            extra.setdefault("allow_insecure_http", True)
        return self.table("repository", url=url, keyfile=keyfile, **extra)

    def s3_repository(self, endpoint: str, bucket: str, prefix: str = "repo", **extra: Any) -> Self:
        return self.repository(f"s3://{bucket}/{prefix}", endpoint_url=endpoint, **extra)

    def state(self, directory: str | Path) -> Self:
        return self.table("state", dir=directory)

    def deployment(self, **values: Any) -> Self:
        return self.table("deployment", **values)

    def data_class(
        self,
        name: str,
        *,
        rpo: str = "1d",
        rto: str = "1h",
        retention: Mapping[str, int] | None = None,
        **extra: Any,
    ) -> Self:
        return self.table("classes", name, rpo=rpo, rto=rto, retention=retention, **extra)

    def asset(self, name: str, kind: str, cls: str, **values: Any) -> Self:
        return self.table("assets", name, kind=kind, **{"class": cls}, **values)

    def files(self, name: str, paths: Iterable[str | Path], cls: str = "standard", **extra: Any) -> Self:
        return self.asset(name, "files", cls, paths=[str(p) for p in paths], **extra)

    def keys(self, name: str, paths: Iterable[str | Path], cls: str = "standard", **extra: Any) -> Self:
        return self.asset(name, "keys", cls, paths=[str(p) for p in paths], **extra)

    def postgres(
        self, name: str, *, dsn: str, pgdata: str | Path | None = None, cls: str = "standard", **extra: Any
    ) -> Self:
        path = None if pgdata is None else str(pgdata)
        return self.asset(name, "postgres", cls, pgdata=path, dsn=dsn, **extra)

    def objects(self, name: str, source: str, cls: str = "standard", **extra: Any) -> Self:
        if _http(extra.get("endpoint_url")):
            extra.setdefault("allow_insecure_http", True)
        return self.asset(name, "objects", cls, source=source, **extra)

    def drill(self, name: str, scenario: str, assets: Iterable[str] = (), **extra: Any) -> Self:
        return self.table("drills", name, scenario=scenario, assets=list(assets), **extra)

    def copy(self, name: str, url: str, **extra: Any) -> Self:
        if _http(extra.get("endpoint_url")):
            extra.setdefault("allow_insecure_http", True)
        return self.table("copies", name, url=url, **extra)

    def webhook(self, url: str, fmt: str = "json") -> Self:
        hooks = self._tables.setdefault(("alerts",), {}).setdefault("webhooks", [])
        hooks.append({"url": url, "format": fmt})
        return self

    def daemon(self, **values: Any) -> Self:
        return self.table("daemon", **values)

    def text(self) -> str:
        out: list[str] = []
        for path, values in self._tables.items():
            out.append("[" + ".".join(toml_key(p) for p in path) + "]")
            out += [f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items()]
            out.append("")
        return "\n".join(out)

    def write(self, path: Path) -> Path:
        path.write_text(self.text())
        return path
