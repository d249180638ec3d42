"""Webhook alerts, deduplicated: one alert per condition until it clears, then one
'resolved'. A failing webhook is retried and reported, never fatal."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lifeboat.private import private_dir, write_private
from lifeboat.redact import redact, redact_url

Log = Callable[[str], None]


def payload(fmt: str, status: str, key: str, message: str) -> dict[str, Any]:
    if fmt == "slack":
        icon = ":rotating_light:" if status == "firing" else ":white_check_mark:"
        return {"text": f"{icon} lifeboat {status}: {message}"}
    return {
        "source": "lifeboat",
        "status": status,
        "condition": key,
        "message": message,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


class Alerter:
    def __init__(
        self, webhooks: list[Any], state_file: Path, log: Log = lambda _: None, retries: int = 3
    ) -> None:
        self.webhooks = webhooks
        self.state_file = state_file
        self.log: Log = lambda line: log(redact(line))
        self.retries = retries
        self.active: dict[str, str] = json.loads(state_file.read_text()) if state_file.exists() else {}
        # the daemon's jobs and its status monitor fire and resolve from their own threads
        self._lock = threading.Lock()

    def _save(self) -> None:
        private_dir(self.state_file.parent, tighten=False)
        write_private(self.state_file, json.dumps(self.active).encode())

    def fire(self, key: str, message: str) -> bool:
        """Alert once for ``key``; repeated calls while it is active send nothing."""
        message = redact(message)
        with self._lock:
            if key in self.active:
                return False
            self.active[key] = message
            self._save()
        self._send("firing", key, message)
        return True

    def resolve(self, key: str) -> bool:
        with self._lock:
            message = self.active.pop(key, None)
            if message is None:
                return False
            self._save()
        self._send("resolved", key, f"resolved: {message}")
        return True

    def _send(self, status: str, key: str, message: str) -> None:
        for hook in self.webhooks:
            body = json.dumps(payload(hook.format, status, key, redact(message))).encode()
            for attempt in range(self.retries):
                try:
                    request = urllib.request.Request(
                        hook.url, data=body, method="POST", headers={"Content-Type": "application/json"}
                    )
                    with urllib.request.urlopen(request, timeout=5):
                        break
                except OSError as exc:
                    where = redact_url(hook.url)  # webhook URLs carry their token
                    self.log(f"webhook {where} failed ({exc}); attempt {attempt + 1} of {self.retries}")
                    time.sleep(0.2 * 2**attempt)
