"""Local files only their owner can read; no secret or URL token in logs or errors."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from lifeboat import runtime
from lifeboat.assets.postgres.wal import drain_spool, spool_segment
from lifeboat.assets.registry import load_policy
from lifeboat.ops.alerts import Alerter
from lifeboat.policy import Webhook
from tests.cli.conftest import Cli

TOKEN = "tok3n-5ecret-91f2"


def modes_under(root: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> None:
    modes = modes_under(root)
    assert modes, f"nothing under {root}"
    loose = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }
    assert not loose, loose


@pytest.fixture
def service_umask() -> Iterator[None]:
    """What a service usually runs with: files created without care would be 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("service_umask")
def test_state_dir_spool_and_caches_are_private(cli: Cli, tmp_path: Path) -> None:
    (cli.source / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (cli.source / "key.pem").chmod(0o600)
    cli.run("backup")
    policy = load_policy(cli.policy)
    state = policy.state_dir
    assert stat.S_IMODE(state.stat().st_mode) == (0o711 if os.geteuid() == 0 else 0o700)
    parents = list((state / "cache").rglob("parents/*"))
    assert parents, "the backup wrote no parent cache"
    # async WAL archiving: a 0600 segment stays 0600 in the spool, and the spool is 0700
    segment = tmp_path / "000000010000000000000001"
    segment.write_bytes(os.urandom(1 << 16))
    segment.chmod(0o600)
    spool = state / "wal-spool" / "db"
    spool_segment(spool, segment, "db", runtime.local_seal(policy))
    assert stat.S_IMODE((spool / segment.name).stat().st_mode) == 0o600
    assert_private(state / "wal-spool")
    assert drain_spool(runtime.open_for_write(policy), "db", spool) == 1
    assert_private(state / "cache")
    assert_private(state / "wal-spool")
    assert stat.S_IMODE((state / "audit.jsonl").stat().st_mode) == 0o600


BODIES: list[bytes] = []


class _Failing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        BODIES.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_webhook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", [f"/hook?token={TOKEN}", f"/services/T01/B02/{TOKEN}"])
def test_failing_webhook_token_is_not_logged(failing_webhook: str, path: str, tmp_path: Path) -> None:
    lines: list[str] = []
    alerter = Alerter(
        [Webhook(url=failing_webhook + path)], tmp_path / "alerts.json", lines.append, retries=2
    )
    alerter.fire("job-failed:backup:db", f"backup failed: password={TOKEN} was refused")
    assert len(lines) == 2 and all("failed" in line for line in lines), lines  # it did fail, twice
    assert all(TOKEN not in line for line in lines), lines
    assert failing_webhook.split("//")[1] in lines[0]  # still says which endpoint failed
    assert stat.S_IMODE((tmp_path / "alerts.json").stat().st_mode) == 0o600
    assert TOKEN not in (tmp_path / "alerts.json").read_text()
    assert BODIES and all(b"password=***" in body and TOKEN.encode() not in body for body in BODIES)
